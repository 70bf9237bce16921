"""swa=true (transfer/swa.py) and tune.lr_find=true (run/lr_find.py), end to end, and a resume
after SWA started that ends exactly as the uninterrupted run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from test_reliability_resume import SignalAt, comparable, run, weights

from conftest import make_image_folder, tiny_cfg
from thawkit.inference.predict import load_checkpoint
from thawkit.reporting.status import RunInterrupted
from thawkit.run.lr_find import suggest


def test_swa_and_lr_finder_end_to_end(make_cfg) -> None:
    cfg = make_cfg("swa=true", "weight_space.swa_start=0.5", "tune.lr_find=true",
                   "tune.num_steps=20", "tune.burn_in=2", "trainer.max_epochs=2")  # fmt: skip
    with open_dict(cfg):
        cfg.logger = None
        cfg.callbacks.views = None
    metrics = run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    # LR finder: the applied LR is the head's, and the lower groups keep their ratio.
    found = summary_lr = metrics["lr_find"]
    assert found["applied"] > 0 and (run_dir / "lr_find.json").is_file()
    assert (run_dir / "plots" / "lr_find.png").is_file()
    lrs = metrics["history"][-1]["lr"]
    decay = cfg.model.lr_decay
    assert math.isclose(lrs["stage_5"] / lrs["head"], decay, rel_tol=1e-6)
    assert summary_lr["configured"] == cfg.model.lr
    # SWA: averaging from epoch 1; the run's model is swa.ckpt, BatchNorm recomputed.
    swa = metrics["swa"]
    assert swa["start_epoch"] == 1 and swa["bn_images"] > 0 and swa["averaged_steps"] == 3
    assert metrics["checkpoint"] == "checkpoints/swa.ckpt"
    assert load_checkpoint(run_dir / "checkpoints" / "swa.ckpt").class_names
    # Calibration is of the run's model: the temperature fitted on swa.ckpt is in swa.ckpt.
    swa_state = torch.load(run_dir / "checkpoints" / "swa.ckpt", weights_only=True)["state_dict"]
    fitted = metrics["calibration"]["temperature"]
    assert float(swa_state["temperature"]) == pytest.approx(fitted, rel=1e-6)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(last["averaging_state"]["n_averaged"]) == 3  # epoch 1's steps (24 images / 8)


def test_suggestion_survives_nan_and_early_spikes() -> None:
    lrs = list(np.logspace(-6, 0, 60))
    loss = [5.0 if i < 5 else 2.0 for i in range(60)]  # an early spike
    loss = [v - (1.5 if 25 <= i < 30 else 0.0) * (i - 24) / 5 for i, v in enumerate(loss)]
    loss[40:] = [float("nan")] * 20
    lr, smoothed = suggest(lrs, loss, burn_in=8, smoothing=3)
    assert lr is not None and lrs[24] <= lr <= lrs[30]
    assert len(smoothed) == 60 and all(math.isnan(v) for v in smoothed[40:])
    assert suggest(lrs[:5], loss[:5])[0] is None  # too few points: keep the configured LR


EPOCHS = 3
OVERRIDES = ["swa=true", "weight_space.swa_start=0.34", "model.head.dropout=0.3",
             "data.batch_size=6", "trainer.deterministic=true",
             f"trainer.max_epochs={EPOCHS}"]  # fmt: skip


@pytest.mark.slow
def test_resume_after_swa_started_is_exact(tmp_path: Path) -> None:
    images = make_image_folder(tmp_path / "images", (14, 10), ("train", "val", "test"))
    full_cfg = tiny_cfg(tmp_path / "full", OVERRIDES, data_root=images)
    full = run(full_cfg)
    cfg = tiny_cfg(tmp_path / "cut", OVERRIDES, data_root=images)
    with pytest.raises(RunInterrupted):
        run(cfg, SignalAt(2, 1))  # SWA started at epoch 1
    run_dir = Path(cfg.paths.output_dir)
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(saved["averaging_state"]["n_averaged"]) > 0
    resumed = run(tiny_cfg(tmp_path / "cut", [*OVERRIDES, "ckpt_path=last"], data_root=images))
    assert comparable(resumed) == comparable(full)
    full_dir = Path(full_cfg.paths.output_dir)
    for name in ("last.ckpt", "swa.ckpt"):
        theirs = weights(full_dir, name)
        for key, value in weights(run_dir, name).items():
            assert torch.equal(value, theirs[key]), (name, key)
    assert json.loads((run_dir / "summary.json").read_text())["swa"] == full["swa"]
