"""Domain adaptation: gradient reversal, MMD, the DANN ramp, target batches, and runs end to end."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.utilities import CombinedLoader
from PIL import Image

from conftest import CONF_DIR, TINY_BACKBONE, make_image_folder, tiny_cfg
from finetune_probe import fit_with_probe
from thawkit.config.checks import ConfigError, validate
from thawkit.data import ImageFolderDataModule
from thawkit.data.shifted_digits import shift_digit
from thawkit.data.targets import DomainBatch
from thawkit.finetune.module import FineTuneModule
from thawkit.models.backbone import resolve_preprocessing
from thawkit.run.train import train
from thawkit.transfer.domain import (
    DANNLoss,
    DomainAdaptation,
    MMDLoss,
    dann_ramp,
    mmd,
    reverse_gradient,
)


# ----------------------------------------------------------------- gradient reversal
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.3, 0.0, 2.0])
def test_gradient_reversal_negates_and_scales_exactly(scale: float) -> None:
    x = torch.randn(5, 7, requires_grad=True)
    upstream = torch.randn(5, 7)
    y = reverse_gradient(x, scale)
    assert torch.equal(y, x)  # identity forward
    y.backward(upstream)
    assert torch.equal(x.grad, -scale * upstream)


def test_gradient_reversal_inside_a_graph() -> None:
    # d/dx of sum(w * GRL(x^2)) = -scale * w * 2x
    x = torch.randn(4, requires_grad=True)
    w = torch.randn(4)
    (w * reverse_gradient(x**2, 0.25)).sum().backward()
    assert torch.allclose(x.grad, -0.25 * w * 2 * x.detach())


def test_dann_ramp_is_ganins_schedule() -> None:
    assert dann_ramp(0.0) == 0.0
    for p in (0.1, 0.25, 0.5, 1.0):
        assert dann_ramp(p) == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1)
    values = [dann_ramp(p / 20) for p in range(21)]
    assert values == sorted(values) and values[-1] > 0.9999
    assert dann_ramp(1.5) == dann_ramp(1.0)  # progress is clipped to [0, 1]


# ----------------------------------------------------------------- MMD
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_grows_with_a_shift(estimator: str) -> None:
    g = torch.Generator().manual_seed(0)
    source = torch.randn(64, 16, generator=g)
    target = torch.randn(64, 16, generator=g)
    values = [float(mmd(source, target + shift, estimator=estimator)) for shift in (0, 0.5, 1, 2)]
    assert values == sorted(values), values
    assert values[-1] > 10 * abs(values[0]), values


def test_mmd_is_zero_for_identical_sets() -> None:
    x = torch.randn(32, 8)
    assert float(mmd(x, x.clone(), estimator="biased")) == pytest.approx(0.0, abs=1e-6)
    # Different draws of one distribution: the unbiased estimate is near 0 (either sign); the
    # biased one is positive, and both are far below a shifted pair's.
    y = torch.randn(32, 8)
    assert abs(float(mmd(x, y, estimator="unbiased"))) < 0.1 * float(mmd(x, y + 1.0))
    assert float(mmd(x, y, estimator="biased")) > 0


def test_mmd_gradient_pulls_target_towards_source() -> None:
    source = torch.randn(32, 4)
    target = (torch.randn(32, 4) + 1.0).requires_grad_(True)
    mmd(source, target).backward()
    with torch.no_grad():
        moved = target - 0.5 * target.grad / target.grad.norm()
    assert float(mmd(source, moved)) < float(mmd(source, target.detach()))


def test_mmd_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="equal width"):
        mmd(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="estimator"):
        mmd(torch.randn(4, 3), torch.randn(4, 3), estimator="linear")


def test_dann_loss_trains_the_classifier_and_reverses_into_the_features() -> None:
    torch.manual_seed(0)
    loss_fn = DANNLoss(in_features=6, weight=0.5, hidden=[8])
    source = torch.randn(10, 6, requires_grad=True)
    target = torch.randn(7, 6, requires_grad=True)
    loss, ramp = loss_fn(source, target, progress=0.2)
    assert ramp == pytest.approx(dann_ramp(0.2))
    loss.backward()
    reversed_grad = torch.cat([source.grad, target.grad])
    # The same loss without the reversal layer: the classifier's gradient is unchanged, the
    # features' is -ramp times it.
    feats = torch.cat([source, target]).detach().requires_grad_(True)
    classifier_grads = [p.grad.clone() for p in loss_fn.classifier.parameters()]
    loss_fn.zero_grad()
    logits = loss_fn.classifier(feats)
    labels = torch.cat([torch.zeros(10), torch.ones(7)])
    plain = 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    plain.backward()
    assert plain.item() == pytest.approx(loss.item())
    assert torch.allclose(reversed_grad, -ramp * feats.grad, atol=1e-7)
    for before, p in zip(classifier_grads, loss_fn.classifier.parameters(), strict=True):
        assert torch.allclose(before, p.grad)


def test_mmd_loss_is_weighted_by_the_ramp() -> None:
    source, target = torch.randn(16, 4), torch.randn(16, 4) + 1
    loss_fn = MMDLoss(weight=2.0)
    loss, ramp = loss_fn(source, target, progress=0.1)
    assert float(loss) == pytest.approx(2.0 * dann_ramp(0.1) * float(mmd(source, target)))
    loss, ramp = MMDLoss(weight=2.0, ramp=False)(source, target, progress=0.0)
    assert ramp == 1.0 and float(loss) == pytest.approx(2.0 * float(mmd(source, target)))


def test_domain_adaptation_config_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="da.target_root"):
        DomainAdaptation("dann")
    with pytest.raises(ValueError, match="not one of"):
        DomainAdaptation("coral", target_root="x")
    with pytest.raises(ValueError, match="da.weight"):
        DomainAdaptation("mmd", target_root="x", weight=-1)
    assert DomainAdaptation().build_loss(8) is None and not DomainAdaptation().enabled


def test_target_folder_without_a_method_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="thawkit.transfer.domain"):
        DomainAdaptation("none", target_root="/data/target")
    assert "set but da=none" in caplog.text
    assert isinstance(DomainAdaptation("dann", "x").build_loss(8), DANNLoss)
    assert isinstance(DomainAdaptation("mmd", "x").build_loss(8), MMDLoss)


def test_validate_lists_da_problems(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, ["da=dann", "da.weight=-1", "da.method=dan"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    text = str(err.value)
    assert "da.weight=-1" in text and "da.method='dan'" in text and "da.target_root" in text


# ----------------------------------------------------------------- data
def _target_folder(root: Path, n: int = 10) -> Path:
    """Unlabelled images in nested folders (names carry no label)."""
    rng = np.random.default_rng(1)
    for i in range(n):
        path = root / ("a" if i % 2 else "b/c") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path)
    return root


def test_train_batches_carry_target_images_unmixed(tmp_path: Path, image_folder: Path) -> None:
    target = _target_folder(tmp_path / "target", n=5)
    dm = ImageFolderDataModule(
        root=str(image_folder), preprocessing=resolve_preprocessing(TINY_BACKBONE),
        image_size=16, batch_size=4, num_workers=0, target_root=str(target),
        target_val_root=str(image_folder / "val"), augment={"name": "none"},
        mix={"mode": "mixup", "mixup_alpha": 1.0},
    )  # fmt: skip
    dm.setup("fit")
    assert len(dm.target_samples) == 5 and all(y == -1 for _, y in dm.target_samples)
    loader = dm.train_dataloader()
    assert isinstance(loader, CombinedLoader)
    source_len = len(dm.splits["train"])
    # The 5 target images are cycled to as many draws as the source has, each seen evenly.
    sampler = loader.iterables["target"].sampler
    order = [i for i, _ in sampler]
    assert len(order) == source_len and sorted(set(order)) == list(range(5))
    assert max(order.count(i) for i in range(5)) - min(order.count(i) for i in range(5)) <= 1

    class Stub:  # what on_after_batch_transfer reads of the trainer
        training, current_epoch, max_epochs, global_rank = True, 0, 2, 0

    dm.trainer = Stub()
    iter(loader)
    batch, _, _ = next(loader)
    target_x = batch["target"][0].clone()
    out = dm.on_after_batch_transfer(batch, 0)
    assert isinstance(out, DomainBatch)
    assert out.y.ndim == 2 and out.y.shape[1] == dm.num_classes  # source: soft (mixed) targets
    assert torch.equal(out.target, target_x)  # target: untouched by Mixup
    assert out[0] is out.x and out[1] is out.y  # callbacks read batch[0], batch[1]
    dm.trainer = None
    vals = dm.val_dataloader()
    assert isinstance(vals, list) and len(vals) == 2


def test_missing_target_folder_is_a_clear_error(tmp_path: Path, image_folder: Path) -> None:
    dm = ImageFolderDataModule(
        root=str(image_folder), preprocessing=TINY_BACKBONE, num_workers=0,
        target_root=str(tmp_path / "nowhere"),
    )  # fmt: skip
    with pytest.raises(ValueError, match="da.target_root=.*is not a folder"):
        dm.setup("fit")


def test_shift_digit_colours_a_digit_on_a_photo() -> None:
    digit = np.zeros((8, 8))
    digit[1:7, 3:5] = 16  # a "1"
    photo = np.full((64, 64, 3), 40, np.uint8)
    image = shift_digit(digit, [photo], np.random.default_rng(0), size=32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert (image[:2] == 40).all()  # background: the photo
    assert image[16, 15:17].mean() > 100  # the stroke: |photo - colour|, colour >= 128


# ----------------------------------------------------------------- end to end
@pytest.mark.parametrize("method", ["dann", "mmd"])
def test_adaptation_runs_end_to_end(method: str, tmp_path: Path, caplog) -> None:
    images = make_image_folder(tmp_path / "images", (12, 12), ("train", "val"))
    target_val = make_image_folder(tmp_path / "target_val", (6, 6), ("",))
    target = _target_folder(tmp_path / "target", n=7)
    cfg = tiny_cfg(
        tmp_path,
        [f"da={method}", f"da.target_root={target}", f"da.target_val_root={target_val}"],
        data_root=images,
    )
    with caplog.at_level(logging.INFO, logger="thawkit"):
        metrics = train(cfg)
    assert "Feature cache: off, domain adaptation" in caplog.text
    assert {"train/da_loss_epoch", "train/da_ramp", "target/acc", "val/acc"} <= set(metrics)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert summary["da"] == method
    assert all("target/acc" in row and "train/da_loss" in row for row in summary["history"])
    assert "target/acc" in summary["best"]
    assert 0 < metrics["train/da_ramp"] <= 1
    # A checkpoint loads for prediction without the domain loss.
    ckpt = Path(cfg.paths.output_dir) / summary["checkpoint"]
    module = FineTuneModule.load_from_checkpoint(ckpt, map_location="cpu", weights="none")
    assert module.domain_loss is None


class _StopAfter(L.Callback):
    """Stops a fit after `epochs` epochs, as an interruption would (same LR schedule)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def test_adapted_run_resumes_exactly(tmp_path: Path) -> None:
    """Stopped after 2 of 3 epochs and resumed == 3 epochs straight, domain classifier included.

    The target images' order and augmentation are keyed by (seed, epoch, position) as the
    source's are, so the resumed epoch draws the same target batches.
    """
    images = make_image_folder(tmp_path / "images", (12, 12), ("train", "val"))
    target = _target_folder(tmp_path / "target", n=7)

    def cfg(name: str):
        overrides = ["da=dann", f"da.target_root={target}", "trainer.max_epochs=3"]
        return tiny_cfg(tmp_path / name, overrides, data_root=images)

    cfg_a = cfg("a")
    fit_with_probe(cfg_a, _StopAfter(2))
    last = Path(cfg_a.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1
    _, resumed, _ = fit_with_probe(cfg("b"), ckpt_path=last)
    _, straight, _ = fit_with_probe(cfg("c"))
    a, b = resumed.state_dict(), straight.state_dict()
    assert any(k.startswith("domain_loss.classifier.") for k in a)
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key


def test_target_accuracy_is_measured_without_adaptation(tmp_path: Path) -> None:
    images = make_image_folder(tmp_path / "images", (12, 12), ("train", "val"))
    target_val = make_image_folder(tmp_path / "target_val", (6, 6), ("",))
    cfg = tiny_cfg(
        tmp_path, ["trainer.max_epochs=1", f"da.target_val_root={target_val}"], data_root=images
    )
    metrics = train(cfg)
    assert "target/acc" in metrics and "train/da_loss_epoch" not in metrics
    assert "val/acc" in metrics  # no dataloader suffix on the source's metrics


# ----------------------------------------------------------------- the example, measured
# Mean gain in target accuracy of da=mmd over da=none (3 seeds) that the slow test requires:
# about half the measured +0.230 (none 0.204/0.189/0.193, mmd 0.393/0.437/0.444).
MIN_MEAN_GAIN = 0.12


def _digits_shift_target_acc(tmp_path: Path, method: str, seed: int) -> float:
    """One run of experiment=digits_shift (bundled Lite0, 32 px, 8 epochs): best/target/acc."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from thawkit.data.shifted_digits import export_shifted_digits

    shifted = export_shifted_digits(tmp_path / "digits_shifted")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=digits_shift", f"da={method}", f"seed={seed}",
                f"da.target_root={shifted / 'unlabelled'}",
                f"da.target_val_root={shifted / 'test'}",
            ],
            return_hydra_config=True,
        )  # fmt: skip
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / f"{method}_{seed}")
        cfg.data.digits_root = str(tmp_path / "digits")
        cfg.data.num_workers = 0
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.enable_progress_bar = False
        cfg.callbacks.progress_bar = None
    train(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    return summary["best"]["target/acc"]


@pytest.mark.slow
def test_adaptation_beats_no_adaptation_on_shifted_digits(tmp_path: Path) -> None:
    """MMD lifts target accuracy on the shifted digits, seed by seed and on average.

    Six runs of experiment=digits_shift (bundled EfficientNet-Lite0, 32 px, 8 epochs): 23 min
    on a shared 2-core CPU. The target accuracy is the one at the checkpointed epoch (best
    source val/acc). Asserted with slack: every seed gains, and the mean gain is at least
    MIN_MEAN_GAIN (measured: +0.189, +0.248, +0.252; docs/transfer.md, domain adaptation).
    """
    seeds = (0, 1, 2)
    none = [_digits_shift_target_acc(tmp_path, "none", s) for s in seeds]
    adapted = [_digits_shift_target_acc(tmp_path, "mmd", s) for s in seeds]
    gains = [a - n for a, n in zip(adapted, none, strict=True)]
    print(f"\ntarget/acc none={none} mmd={adapted} gains={gains}")  # the measured numbers
    assert all(g > 0 for g in gains), gains
    assert sum(gains) / len(gains) >= MIN_MEAN_GAIN, gains
