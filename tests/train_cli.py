"""Run `python train.py ...` as a user would (a subprocess), shrunk to the tiny test setup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The command-line twin of conftest.tiny_cfg: tiny timm backbone, 32 px, CPU, 2 epochs.
TINY = [
    "model.backbone=test_efficientnet",
    "model.weights=none",
    "data.image_size=32",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
]


def run_train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python train.py *args` from the repo root, this checkout's code first on the path."""
    env = dict(os.environ)
    paths = [str(REPO / "src"), str(REPO / "tests"), str(REPO / "tools" / "probes")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env["THAWKIT_OFFLINE"] = "1"
    env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Fail with the tail of the output when the command failed."""
    assert done.returncode == 0, (
        f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )
    return done


def run_train_here(*args: str, monkeypatch) -> int:
    """`python train.py *args` inside this process (no interpreter start-up); returns the exit code.

    Worker processes of a launcher (joblib, submitit) import thawkit, so src/ goes on their
    PYTHONPATH. Hydra's global state is cleared afterwards.
    """
    import runpy

    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    paths = [str(REPO / "src"), str(REPO / "tests"), str(REPO / "tools" / "probes")]
    paths.append(os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setattr(sys, "argv", [str(REPO / "train.py"), *args])
    GlobalHydra.instance().clear()
    try:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # no later test may think it runs in a sweep
    return code
