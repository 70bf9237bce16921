"""Configs of version 0.1 are upgraded: old module paths and old keys (tests/test_legacy_layout.py
resumes the whole 0.1 run dir, its `ema: false` included)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from thawkit.config.legacy import upgrade

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v0_1_run"


def test_old_targets_and_ema_flags_are_upgraded() -> None:
    cfg = upgrade(OmegaConf.load(FIXTURE / ".hydra" / "config.yaml"))
    assert cfg.strategy._target_ == "thawkit.finetune.unfreeze.UnfreezeSchedule"
    assert cfg.callbacks.views._target_ == "thawkit.reporting.tensorboard.RunViews"
    assert "ema" not in cfg and "ema_decay" not in cfg
    assert cfg.callbacks.ema is None  # ema: false

    on = OmegaConf.create({"ema": True, "ema_decay": 0.99, "callbacks": {"views": None}})
    upgrade(on)
    assert OmegaConf.to_container(on) == {
        "callbacks": {"views": None, "ema": {"_target_": "thawkit.transfer.ema.EMA", "decay": 0.99}}
    }
