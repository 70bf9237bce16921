"""train.log and summary.json: every file named, also a non-UTF-8 name; set-up failures recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import make_image_folder
from train_cli import TINY, run_train_here


def test_train_log_names_a_non_utf8_file(tmp_path: Path, monkeypatch) -> None:
    root = make_image_folder(tmp_path / "images", (6, 6), ("train", "val"))
    (root / "train" / "class_0" / os.fsdecode(b"bad\xff.jpg")).write_bytes(b"not an image")
    run_dir = tmp_path / "run"
    args = [*TINY, f"data.root={root}", f"hydra.run.dir={run_dir}", "~logger", "debug=limit"]
    assert run_train_here(*args, "trainer.max_epochs=1", monkeypatch=monkeypatch) == 0
    log = (run_dir / "train.log").read_bytes()
    assert b"Skipping unreadable image" in log and b"bad\xff.jpg" in log
    assert b"Logging error" not in log


def test_a_setup_failure_leaves_summary_json_and_the_log_line(tmp_path: Path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY, f"data.root={tmp_path / 'missing'}", f"hydra.run.dir={run_dir}", "~logger"]
    assert run_train_here(*args, monkeypatch=monkeypatch) != 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "is not a folder" in summary["error"]
    assert "is not a folder" in (run_dir / "train.log").read_text()
