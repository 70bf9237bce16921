"""Run dirs of version 0.1 still resume: old module paths and old keys are upgraded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from conftest import make_image_folder
from thawkit.config.legacy import upgrade
from train_cli import check, run_train

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


def test_a_v0_1_run_dir_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    images = make_image_folder(tmp_path / "images")  # the folder the run was made on
    done = check(run_train(f"resume={run}", f"data.root={images}", "trainer.max_epochs=3"))
    assert "Resuming from" in done.stdout + done.stderr
    # The saved config's `ema: false` would be an unknown top-level key without the upgrade.
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert [row["epoch"] for row in summary["history"]] == [0, 1, 2]
