"""A run dir written by thawkit 0.1 (tests/fixtures/v0_1_run) still predicts, evaluates and resumes.

Version 0.1 kept every module side by side in `thawkit/`; its `.hydra/config.yaml` names
targets such as `thawkit.module.FineTuneModule` (config/legacy.py maps them to today's layout).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from conftest import make_image_folder
from thawkit.inference.evaluate import evaluate
from thawkit.inference.predict import predict
from train_cli import check, run_train

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v0_1_run"


def old_run(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the 0.1 run dir, and the image folder it was trained on (made again)."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run, make_image_folder(tmp_path / "images")


def test_the_fixture_is_the_old_layout() -> None:
    text = (FIXTURE / ".hydra" / "config.yaml").read_text()
    assert "_target_: thawkit.module.FineTuneModule" in text and "thawkit.finetune" not in text


def test_old_checkpoint_predicts_and_evaluates(tmp_path: Path) -> None:
    run, images = old_run(tmp_path)
    ckpt = run / "checkpoints" / "best.ckpt"
    predictions, csv_path = predict(ckpt, images / "val", top_k=2, progress=False)
    assert len(predictions) == 8 and csv_path.is_file()
    assert all(p.classes and set(p.classes) <= {"class_0", "class_1"} for p in predictions)
    metrics = evaluate(ckpt, images, split="val", output_dir=tmp_path / "eval", progress=False)
    assert metrics["num_images"] == 8 and 0.0 <= metrics["acc"] <= 1.0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["acc"] == metrics["acc"]


def test_old_run_dir_resumes(tmp_path: Path) -> None:
    run, images = old_run(tmp_path)
    before = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert before["epoch"] == 1
    check(run_train(f"resume={run}", f"data.root={images}", "trainer.max_epochs=3"))
    after = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert after["epoch"] == 2 and after["global_step"] > before["global_step"]
    summary = json.loads((run / "summary.json").read_text())
    assert [row["epoch"] for row in summary["history"]] == [0, 1, 2]
