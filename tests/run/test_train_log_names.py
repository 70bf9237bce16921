"""train.log records every file it names, also a name that is not valid UTF-8."""

from __future__ import annotations

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
