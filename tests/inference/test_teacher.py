"""A checkpoint as a distillation teacher: refused on other classes, bad files; a run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_image_folder, tiny_cfg
from thawkit.inference.teacher import TeacherError, build_distillation, class_index
from thawkit.run.train import build
from train_cli import TINY, run_train_here


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A briefly trained teacher at 40 px (the student runs at 32), in its own run dir."""
    tmp = tmp_path_factory.mktemp("teacher")
    root = make_image_folder(tmp / "images", (12, 12), ("train", "val"))
    overrides = ["strategy=full", "debug=limit", "trainer.max_epochs=1", "~logger"]
    cfg = tiny_cfg(tmp, [*overrides, "data.image_size=40"], data_root=root)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    return Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt", root


def test_teacher_of_other_classes_is_refused_by_name(tmp_path, teacher) -> None:
    ckpt, _ = teacher
    other = make_image_folder(tmp_path / "other", {"class_0": 12, "cats": 12}, ("train", "val"))
    cfg = tiny_cfg(tmp_path, ["~logger", f"distill.teacher={ckpt}"], data_root=other)
    with pytest.raises(TeacherError, match="not in the teacher: \\['cats'\\]") as e:
        build(cfg)
    assert "only in the teacher: ['class_1']" in str(e.value)


def test_same_classes_in_another_order_are_matched_by_name() -> None:
    assert class_index(["b", "a", "c"], ["a", "b", "c"], "t.ckpt") == [1, 0, 2]
    with pytest.raises(TeacherError, match="2 classes"):
        class_index(["a", "b"], ["a", "b", "c"], "t.ckpt")


def test_missing_or_invalid_teacher_files_are_refused(tmp_path, image_folder) -> None:
    cfg = tiny_cfg(tmp_path, [f"distill.teacher={tmp_path / 'nope.ckpt'}"], data_root=image_folder)
    with pytest.raises(TeacherError, match="is not a file"):
        build(cfg)  # before the image scan (preflight)
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    with pytest.raises(TeacherError, match="cannot be loaded as a thawkit checkpoint"):
        build_distillation(["class_0", "class_1"], str(bad))
    assert build_distillation(["class_0"], None) is None


def test_distillation_runs_end_to_end(tmp_path, teacher, monkeypatch) -> None:
    ckpt, root = teacher
    out = tmp_path / "student"
    args = [*TINY, f"data.root={root}", f"paths.output_dir={out}", "strategy=two_phase"]
    args += ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "~logger"]
    args += [f"distill.teacher={ckpt}", "distill.weight=0.7", "distill.temperature=3"]
    assert run_train_here(*args, monkeypatch=monkeypatch) == 0
    summary = json.loads((out / "summary.json").read_text())
    record = summary["distill"]
    assert record["teacher"] == str(ckpt.resolve())
    assert record["backbone"] == "test_efficientnet" and record["image_size"] == 40
    teacher_summary = json.loads((ckpt.parents[1] / "summary.json").read_text())
    assert record["val_acc"] == teacher_summary["best"]["val/acc"]
    assert (record["weight"], record["temperature"]) == (0.7, 3.0)
    assert "train/kd_loss" in summary["history"][0]
