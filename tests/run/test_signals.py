"""Ctrl-C and SIGTERM: the run stops at a batch boundary, saves last.ckpt, says "interrupted".

The SIGINT test runs `python train.py` as a user would (a subprocess, signal sent once the
first checkpoint exists), then continues the run with `python train.py resume=DIR` (in this
process, through Hydra, to save an interpreter start): the resumed run uses the run's own
config and dir, and leaves the run's original Hydra record as it was.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from test_reliability_resume import SignalAt, run

from conftest import make_image_folder, tiny_cfg
from thawkit.finetune.module import FineTuneModule
from thawkit.reporting.status import RunInterrupted

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "model.backbone=test_efficientnet",
    "model.weights=none",
    "data.image_size=32",
    "data.batch_size=6",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
    "~logger",
]


def run_here(*args: str) -> None:
    """`python train.py *args` inside this process (Hydra's entry point and all)."""
    argv = sys.argv
    sys.argv = [str(REPO / "train.py"), *args]
    GlobalHydra.instance().clear()
    try:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None


def test_sigint_saves_last_ckpt_and_resume_continues_the_run(tmp_path: Path) -> None:
    images = make_image_folder(tmp_path / "images", (12, 12), ("train", "val"))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "THAWKIT_OFFLINE": "1"}
    env["OMP_NUM_THREADS"] = "1"
    args = [*TINY, "strategy=gradual", f"data.root={images}", "trainer.max_epochs=50"]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert last.exists(), proc.communicate(timeout=5)[0][-3000:] if proc.poll() else "no ckpt"
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 128 + signal.SIGINT, output[-3000:]
    assert "Resume with: python train.py resume=" in output

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGINT" in summary["error"]
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    stopped_epoch = ckpt["epoch"]
    assert 0 < ckpt["global_step"] < 50 * 4
    model = FineTuneModule.load_from_checkpoint(last, map_location="cpu").eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    original_config = (run_dir / ".hydra" / "config.yaml").read_text()

    # Continue: the run's own config (strategy=gradual, the tiny model, its data), its own dir.
    run_here(f"resume={run_dir}", f"trainer.max_epochs={stopped_epoch + 2}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["error"] is None
    assert summary["strategy"] == "gradual" and summary["backbone"] == "test_efficientnet"
    assert [r["epoch"] for r in summary["history"]] == list(range(stopped_epoch + 2))
    assert (run_dir / ".hydra" / "config.yaml").read_text() == original_config
    resumed_records = list((run_dir / ".hydra").glob("resumed-*/overrides.yaml"))
    assert len(resumed_records) == 1
    assert not list(tmp_path.glob("outputs"))  # nothing written outside the run dir


def test_sigterm_stops_like_ctrl_c(tmp_path: Path) -> None:
    images = make_image_folder(tmp_path / "images", (12, 12), ("train", "val"))
    cfg = tiny_cfg(tmp_path, ["data.batch_size=6", "trainer.max_epochs=3"], data_root=images)
    with pytest.raises(RunInterrupted) as stop:
        run(cfg, SignalAt(1, 1, signal.SIGTERM))
    assert stop.value.signal == "SIGTERM" and stop.value.code == 128 + signal.SIGTERM
    assert (stop.value.epoch, stop.value.step) == (1, 6)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGTERM" in summary["error"]
    # Lightning's handlers are back once fit ended.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
