"""The module's logging in head-only epochs: the LRs logged only at the steps that reach the
loggers and the metric objects handed to Lightning once an epoch write the same records as
logging both every step (docs/architecture.md, "Epochs on cached features")."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import thawkit.finetune.module as module_mod
from conftest import make_image_folder, tiny_cfg
from thawkit.run.train import train


def _scalars(tmp: Path, root: Path, every_step: bool, monkeypatch: pytest.MonkeyPatch) -> dict:
    overrides = ["strategy=two_phase", "trainer.max_epochs=3", "seed=3", "augment=none"]
    cfg = tiny_cfg(tmp, overrides, data_root=root)
    cfg.trainer.log_every_n_steps = 2  # 3 steps an epoch: logs fall inside epochs
    with monkeypatch.context() as m:
        if every_step:  # the behaviour before: every step logged the LRs and the metrics
            m.setattr(module_mod, "logs_this_step", lambda trainer: True)
            original = module_mod.FineTuneModule._step

            def step(self, *args, **kwargs):
                self._metrics_logged.clear()
                return original(self, *args, **kwargs)

            m.setattr(module_mod.FineTuneModule, "_step", step)
        train(cfg)
    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard"), {"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_same_scalars_as_logging_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_image_folder(tmp_path / "images", (13, 11), ("train", "val"))
    now = _scalars(tmp_path / "now", root, False, monkeypatch)
    before = _scalars(tmp_path / "before", root, True, monkeypatch)
    assert now.keys() == before.keys()
    lr_tags = [t for t in now if t.startswith("lr/")]
    assert "lr/head" in lr_tags and len(lr_tags) > 2  # one per layer group
    for tag in now:
        assert now[tag] == before[tag], tag
    # Every group's LR at exactly the steps of the other step scalars, the frozen ones at 0
    # until two_phase unfreezes them (epoch 2).
    steps = [s for s, _ in now["train/loss_step"]]
    assert len(steps) >= 4
    for tag in lr_tags:
        assert [s for s, _ in now[tag]] == steps, tag
    assert all(v > 0 for _, v in now["lr/head"])
    stem = now["lr/stem"]
    assert stem[0][1] == 0 and stem[-1][1] > 0
    for tag in ("train/acc", "val/acc", "val/f1_macro", "val/recall_macro"):
        assert len(now[tag]) == 3, tag  # once an epoch
