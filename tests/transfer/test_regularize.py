"""L2-SP and EWC (transfer/regularize.py): the pull towards w0, the penalty, the Fisher, resume."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, open_dict

from conftest import make_image_folder, tiny_cfg
from thawkit.config.checks import ConfigError, validate
from thawkit.finetune.module import FineTuneModule
from thawkit.run.train import build, train
from thawkit.transfer.regularize import (
    EWC,
    L2SP,
    RegularizerError,
    WeightRegularizer,
    source_classifier,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), (12, 12), ("train", "val"))


def fit(cfg: DictConfig, ckpt_path: str | None = None) -> tuple[FineTuneModule, L.Trainer]:
    with open_dict(cfg):
        cfg.logger = None
        cfg.callbacks.early_stopping = None  # runs last exactly max_epochs
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model, trainer


def regularizer_of(trainer: L.Trainer) -> WeightRegularizer:
    return next(c for c in trainer.callbacks if isinstance(c, WeightRegularizer))


def backbone_distance(model: FineTuneModule, anchor: dict[str, torch.Tensor]) -> float:
    """||w - w0|| computed here, independently of the regularizer's own `distance`."""
    return (
        sum(
            float((p.detach() - anchor[n]).pow(2).sum())
            for n, p in model.backbone.model.named_parameters()
        )
        ** 0.5
    )


@pytest.mark.parametrize("kind", ["l2sp", "ewc"])
def test_larger_strength_ends_closer_to_the_pretrained_weights(
    kind: str, images: Path, tmp_path: Path
) -> None:
    distances, penalties = [], []
    starts: list[dict[str, torch.Tensor]] = []
    for strength in (0.0, 1.0, 100.0):
        cfg = tiny_cfg(
            tmp_path / f"s{strength}",
            ["strategy=full", f"regularizer={kind}", f"regularizer.strength={strength}"],
            data_root=images,
        )
        model, trainer = fit(cfg)
        reg = regularizer_of(trainer)
        assert type(reg) is {"l2sp": L2SP, "ewc": EWC}[kind]
        # The snapshot is the weights the fit started from (seed 0: the same init every time).
        start = {n: t.cpu() for n, t in reg.anchor.items()}
        starts.append(start)
        assert all(torch.equal(start[n], starts[0][n]) for n in start)
        d = backbone_distance(model, start)
        assert reg.distance(model) == pytest.approx(d, rel=1e-5)
        assert float(trainer.callback_metrics["train/weight_distance"]) == pytest.approx(d, 1e-4)
        distances.append(d)
        penalties.append(float(trainer.callback_metrics["train/penalty_epoch"]))
    assert distances[0] > distances[1] > distances[2] > 0, distances
    assert penalties[0] == 0.0 and penalties[1] > 0 and penalties[2] > 0


def test_penalty_is_the_formula_over_trainable_weights_only() -> None:
    module = FineTuneModule(2, "test_efficientnet", "none")
    module.set_trainable_groups(2)  # the top two groups train, the rest are frozen
    reg = EWC(strength=3.0)
    reg.anchor = {n: p.detach().clone() for n, p in module.backbone.model.named_parameters()}
    assert float(reg.penalty(module)) == 0.0  # at w0
    torch.manual_seed(0)
    reg.importance = {n: torch.rand_like(t) for n, t in reg.anchor.items()}
    with torch.no_grad():
        for p in module.backbone.model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # frozen ones too: they must not count
    expected = 0.0
    for n, p in module.backbone.model.named_parameters():
        if p.requires_grad:
            expected += float((reg.importance[n] * (p - reg.anchor[n]) ** 2).sum())
    assert float(reg.penalty(module)) == pytest.approx(1.5 * expected, rel=1e-5)
    # The gradient reaches exactly the trainable backbone weights, never the head.
    reg.penalty(module).backward()
    for n, p in module.backbone.model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    assert all(p.grad is None for p in module.head.parameters())


def test_head_only_epochs_get_no_penalty_and_the_feature_cache_still_serves(
    images: Path, tmp_path: Path
) -> None:
    cfg = tiny_cfg(
        tmp_path,
        ["strategy=feature_extraction", "regularizer=l2sp", "regularizer.strength=100"],
        data_root=images,
    )
    model, trainer = fit(cfg)
    assert float(trainer.callback_metrics["train/penalty_epoch"]) == 0.0
    speed = next(c for c in trainer.callbacks if type(c).__name__ == "SpeedOptions")
    assert speed.features.extractions, "the head trained on cached features"
    assert regularizer_of(trainer).distance(model) == 0.0


def test_backbone_weight_decay_is_off_but_the_head_keeps_it(images: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, ["strategy=full", "regularizer=l2sp"], data_root=images)
    _, trainer = fit(cfg)
    decay = {g["name"]: g["weight_decay"] for g in trainer.optimizers[0].param_groups}
    assert decay["head"] == cfg.model.weight_decay > 0
    assert all(v == 0.0 for k, v in decay.items() if not k.startswith("head"))


def test_resume_keeps_the_snapshot_of_the_start(images: Path, tmp_path: Path) -> None:
    """w0 and the Fisher come from the checkpoint: the pretrained start, not the resumed weights."""
    overrides = ["strategy=full", "regularizer=ewc", "regularizer.strength=1"]
    cfg = tiny_cfg(tmp_path, [*overrides, "trainer.max_epochs=1"], data_root=images)
    model, trainer = fit(cfg)
    first = regularizer_of(trainer)
    anchor = {n: t.clone() for n, t in first.anchor.items()}
    fisher = {n: t.clone() for n, t in first.importance.items()}
    assert backbone_distance(model, anchor) > 0
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    (state,) = [v for k, v in saved["callbacks"].items() if "EWC" in k]
    assert all(torch.equal(state["anchor"][n], anchor[n]) for n in anchor)

    again = tiny_cfg(tmp_path, [*overrides, "trainer.max_epochs=2"], data_root=images)
    resumed, trainer2 = fit(again, ckpt_path=str(last))
    reg = regularizer_of(trainer2)
    assert all(torch.equal(reg.anchor[n].cpu(), anchor[n]) for n in anchor)
    assert all(torch.equal(reg.importance[n].cpu(), fisher[n]) for n in fisher)
    assert trainer2.current_epoch == 2 and resumed.regularizer is None  # detached after fit


def test_lp_ft_with_ewc_and_ema_runs_end_to_end(images: Path, tmp_path: Path) -> None:
    """The three combine: no penalty while probing, a penalty once the backbone trains."""
    cfg = tiny_cfg(
        tmp_path,
        ["strategy=lp_ft", "strategy.plateau_max_epochs=1", "regularizer=ewc", "ema=on"],
        data_root=images,
    )
    with open_dict(cfg):
        cfg.logger = None
    metrics = train(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert [row["frozen_groups"] for row in summary["history"]] == [6, 0]
    assert metrics["train/penalty_epoch"] > 0 and metrics["train/weight_distance"] > 0


def test_resume_without_saved_fisher_fails_clearly(images: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, ["strategy=full", "trainer.max_epochs=1"], data_root=images)
    fit(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    again = tiny_cfg(
        tmp_path, ["strategy=full", "regularizer=ewc", "trainer.max_epochs=2"], data_root=images
    )
    with pytest.raises(RegularizerError, match="saved without EWC's Fisher"):
        fit(again, ckpt_path=str(last))


def test_source_classifier_of_the_bundled_lite0_is_its_imagenet_head() -> None:
    import timm

    from thawkit.models.weights import bundled_state_dict

    head = source_classifier("tf_efficientnet_lite0", "bundled")
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = bundled_state_dict(full.state_dict())
    assert head.out_features == 1000
    assert torch.equal(head.weight, state["classifier.weight"])
    assert torch.equal(head.bias, state["classifier.bias"])


def test_ewc_without_a_source_classifier_fails_clearly(tmp_path: Path) -> None:
    module = FineTuneModule(2, "test_efficientnet", "none")
    no_head = tmp_path / "backbone_only.pth"
    torch.save(module.backbone.model.state_dict(), no_head)
    with pytest.raises(RegularizerError, match="holds no classifier.*regularizer=l2sp"):
        source_classifier("test_efficientnet", str(no_head))
    with pytest.raises(RegularizerError, match="thawkit checkpoint.*regularizer=l2sp"):
        source_classifier("test_efficientnet", str(tmp_path / "run.ckpt"))


def test_source_classifier_from_a_weights_file_comes_through_the_weights_loader(
    tmp_path: Path,
) -> None:
    """A file source: thawkit.models.weights reads it (safetensors, `module.` keys), not EWC."""
    from safetensors.torch import save_file

    from thawkit.models.backbone import build_model

    torch.manual_seed(7)
    full = build_model("test_efficientnet", with_classifier=True).state_dict()
    path = tmp_path / "source.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in full.items()}, str(path))
    head = source_classifier("test_efficientnet", str(path))
    assert torch.equal(head.weight, full["classifier.weight"])
    assert torch.equal(head.bias, full["classifier.bias"])


def test_a_module_without_a_backbone_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match="FineTuneModule only .*LightningModule has no backbone"):
        L2SP().setup(None, L.LightningModule(), "fit")


def test_bad_settings_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="regularizer.strength=-1"):
        L2SP(strength=-1)
    with pytest.raises(ValueError, match="regularizer.fisher_batches=0"):
        EWC(fisher_batches=0)
    cfg = tiny_cfg(tmp_path, ["regularizer=ewc", "regularizer.strength=-2", "+regularizer.lamda=1"])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert "regularizer.strength=-2" in str(e.value) and "regularizer.lamda" in str(e.value)


def test_regularizer_defaults_to_none(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path)
    assert cfg.regularizer is None
    assert tiny_cfg(tmp_path, ["regularizer=l2sp"]).regularizer.strength == 0.1
