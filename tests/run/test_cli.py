"""The `thawkit` command (thawkit.cli), run as `python -m thawkit.cli` from outside the repo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import make_image_folder
from train_cli import REPO, TINY


def thawkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, THAWKIT_OFFLINE="1", HYDRA_FULL_ERROR="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "thawkit.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_help_lists_the_commands(tmp_path: Path) -> None:
    done = thawkit("--help", cwd=tmp_path)
    assert done.returncode == 0
    for name in ("train", "evaluate", "predict", "export", "serve", "audit", "report"):
        assert f"\n  {name} " in done.stdout
    wrong = thawkit("fit", cwd=tmp_path)
    assert wrong.returncode == 2 and "unknown command 'fit'" in wrong.stderr


def test_train_then_report_and_evaluate_from_any_folder(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", (12, 12), ("train", "val"))
    run_dir = tmp_path / "run"
    done = thawkit("train", *TINY, "strategy=gradual", f"data.root={data}",
                   f"hydra.run.dir={run_dir}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed"
    assert json.loads((run_dir / "summary.json").read_text())["strategy"] == "gradual"
    assert (run_dir / "train.log").is_file()  # named after the command, as for train.py
    assert f"python -m thawkit.cli predict ckpt={run_dir / 'checkpoints' / 'best.ckpt'}" in (
        done.stdout
    )

    report = thawkit("report", str(run_dir), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "1 runs: 1 completed, 0 failed" in report.stdout
    assert (run_dir / "sweep_summary.md").is_file()

    ckpt = run_dir / "checkpoints" / "best.ckpt"
    evaluated = thawkit("evaluate", f"ckpt={ckpt}", f"data.root={data}", "split=val",
                        "device=cpu", cwd=tmp_path)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "acc" in evaluated.stdout
