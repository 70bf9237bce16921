"""ema=on (transfer/ema.py): the averaged weights are validated, saved, tested and resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, open_dict

from conftest import tiny_cfg
from thawkit.config.checks import ConfigError, validate
from thawkit.finetune.module import FineTuneModule
from thawkit.run.train import build
from thawkit.transfer.ema import EMA, ema_multi_avg_fn

DECAY = 0.9


def head_weight(module: FineTuneModule) -> torch.Tensor:
    return module.head.layers[-1].weight.detach().clone()


def head_key(state: dict[str, torch.Tensor]) -> torch.Tensor:
    (key,) = [k for k in state if k.startswith("head.") and k.endswith("weight")]
    return state[key]


class Recorder(L.Callback):
    """Head weights: raw after every optimizer step, and what validation and test see."""

    def __init__(self) -> None:
        self.raw: list[torch.Tensor] = []
        self.validated: list[torch.Tensor] = []
        self.averaged_during_val: list[torch.Tensor] = []
        self.tested: list[torch.Tensor] = []
        self.at_train_start: torch.Tensor | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        self.at_train_start = head_weight(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: FineTuneModule, *args: Any) -> None:
        self.raw.append(head_weight(pl_module))

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if not trainer.sanity_checking:
            self.validated.append(head_weight(pl_module))
            ema = next(c for c in trainer.callbacks if isinstance(c, EMA))
            self.averaged_during_val.append(head_weight(ema.average_model))

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        self.tested.append(head_weight(pl_module))


def fit(cfg: DictConfig, ckpt_path: str | None = None) -> tuple[Recorder, Any, L.Trainer, Any]:
    with open_dict(cfg):
        cfg.logger = None
        cfg.callbacks.early_stopping = None
    datamodule, model, trainer = build(cfg)
    recorder = Recorder()
    trainer.callbacks.append(recorder)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return recorder, model, trainer, datamodule


def expected_ema(raw: list[torch.Tensor]) -> list[torch.Tensor]:
    """The EMA after each step, written from the formula (warmup: min(decay, (1+n)/(10+n)))."""
    out, ema = [], None
    for n, w in enumerate(raw):
        ema = w.clone() if ema is None else ema + (1 - min(DECAY, (1 + n) / (10 + n))) * (w - ema)
        out.append(ema)
    return out


def test_ema_weights_are_validated_saved_and_tested(make_cfg) -> None:
    cfg = make_cfg("strategy=full", "ema=on", f"callbacks.ema.decay={DECAY}")
    rec, model, trainer, datamodule = fit(cfg)
    steps_per_epoch = len(rec.raw) // 2
    ema = expected_ema(rec.raw)
    # Validation of epoch e runs on the EMA after its last step, not on the raw weights.
    assert len(rec.validated) == 2  # one validation batch per epoch
    for epoch in range(2):
        step = (epoch + 1) * steps_per_epoch - 1
        torch.testing.assert_close(rec.validated[epoch], ema[step], rtol=1e-5, atol=1e-7)
        assert torch.equal(rec.averaged_during_val[epoch], rec.raw[step])  # swapped out
        assert not torch.allclose(rec.validated[epoch], rec.raw[step])
    # The saved model is the EMA; the raw weights are kept aside for resuming.
    ckpt_dir = Path(cfg.paths.output_dir) / "checkpoints"
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    torch.testing.assert_close(head_key(last["state_dict"]), ema[-1], rtol=1e-5, atol=1e-7)
    assert torch.equal(head_key(last["current_model_state"]), rec.raw[-1])
    # After fit the module holds the EMA; test runs on best.ckpt's state_dict (the EMA).
    torch.testing.assert_close(head_weight(model), ema[-1], rtol=1e-5, atol=1e-7)
    trainer.test(model, datamodule=datamodule, ckpt_path="best", verbose=False)
    best = torch.load(ckpt_dir / "best.ckpt", weights_only=True)
    assert rec.tested and all(torch.equal(w, head_key(best["state_dict"])) for w in rec.tested)
    assert not torch.equal(head_key(best["state_dict"]), head_key(best["current_model_state"]))
    # predict/evaluate/export load the checkpoint's state_dict: the EMA.
    loaded = FineTuneModule.load_from_checkpoint(ckpt_dir / "best.ckpt", map_location="cpu")
    assert torch.equal(head_weight(loaded), head_key(best["state_dict"]))


def test_resume_restores_raw_weights_and_the_average(make_cfg, tmp_path: Path) -> None:
    on = ("strategy=full", "ema=on", f"callbacks.ema.decay={DECAY}")
    cfg = make_cfg(*on, "trainer.max_epochs=1")
    rec1, *_ = fit(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    again = make_cfg(*on, "trainer.max_epochs=2")
    rec2, model, trainer, _ = fit(again, ckpt_path=str(last))
    # Training continues from the raw weights, and the average continues from the saved one.
    assert torch.equal(rec2.at_train_start, head_key(saved["current_model_state"]))
    ema = expected_ema(rec1.raw + rec2.raw)
    torch.testing.assert_close(rec2.validated[-1], ema[-1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(head_weight(model), ema[-1], rtol=1e-5, atol=1e-7)


def test_frozen_backbone_ema_is_the_backbone_and_the_feature_cache_holds(make_cfg) -> None:
    cfg = make_cfg("strategy=feature_extraction", "ema=on", "trainer.max_epochs=3")
    with open_dict(cfg):
        cfg.logger = None
        cfg.callbacks.early_stopping = None
    datamodule, model, trainer = build(cfg)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer.fit(model, datamodule=datamodule)
    after = model.backbone.state_dict()  # the EMA's backbone, copied in at train end
    assert all(torch.equal(before[k], after[k]) for k in before)
    speed = next(c for c in trainer.callbacks if type(c).__name__ == "SpeedOptions")
    # Features computed once per split: the EMA swap did not change the backbone's digest.
    assert sorted(e["split"] for e in speed.features.extractions) == ["train", "val"]


def test_ema_update_formula_with_warmup() -> None:
    update = ema_multi_avg_fn(0.99, warmup=True)
    avg, cur = [torch.zeros(3)], [torch.ones(3)]
    update(avg, cur, torch.tensor(1))  # decay min(0.99, 2/11)
    torch.testing.assert_close(avg[0], torch.full((3,), 9 / 11))
    plain = ema_multi_avg_fn(0.99, warmup=False)
    avg = [torch.zeros(3)]
    plain(avg, cur, torch.tensor(1000))
    torch.testing.assert_close(avg[0], torch.full((3,), 0.01))
    counts = [torch.tensor([5])]
    update(counts, [torch.tensor([7])], torch.tensor(3))
    assert int(counts[0]) == 7  # integer buffers follow the model


def test_ema_option_and_validation(tmp_path: Path) -> None:
    assert tiny_cfg(tmp_path).callbacks.ema is None
    _, _, trainer = build(tiny_cfg(tmp_path, ["ema=on", "callbacks.ema.decay=0.99"]))
    (ema,) = [c for c in trainer.callbacks if isinstance(c, EMA)]
    assert ema.decay == 0.99
    with pytest.raises(ConfigError, match=r"callbacks.ema.decay=1\.5 is out of range"):
        validate(tiny_cfg(tmp_path, ["ema=on", "callbacks.ema.decay=1.5"]))
    with pytest.raises(ValueError, match=r"callbacks.ema.decay=0.0 is out of range"):
        EMA(decay=0.0)
