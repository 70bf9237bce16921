"""A trained thawkit checkpoint as the teacher of a distillation (`distill.teacher=PATH`).

The teacher is loaded as inference loads any checkpoint (`thawkit.inference.predict`): the
architecture, class names, trained weights, preprocessing and training image size come from the
checkpoint alone. Here it is checked against the data (the same classes, by name) and wrapped
in the loss of `thawkit.transfer.distill`. What the run records about it (summary.json's
`distill`): its path, backbone, image size, and the validation accuracy of its own run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from thawkit.config.schema import DistillSchema
from thawkit.inference.predict import CheckpointError, LoadedModel, load_checkpoint
from thawkit.transfer.distill import Distillation

log = logging.getLogger(__name__)


class TeacherError(ValueError):
    """distill.teacher cannot teach this run; the message names the problem and the fix."""


def check_teacher_path(path: str | os.PathLike) -> Path:
    """The teacher checkpoint exists as a file (a millisecond check, before the image scan)."""
    p = Path(path).expanduser()
    if not p.is_file():
        hint = " (a folder: pass its checkpoints/best.ckpt)" if p.is_dir() else ""
        raise TeacherError(
            f"distill.teacher={path} is not a file{hint}. Pass the checkpoint of a thawkit "
            "training run on the same classes, e.g. "
            "distill.teacher=outputs/<date>/<time>-<strategy>/checkpoints/best.ckpt "
            "(or distill.teacher=null: no distillation)."
        )
    return p


def load_teacher(path: str | os.PathLike) -> LoadedModel:
    """Load `path` for teaching: eval mode, CPU (the distillation moves it to the student)."""
    p = check_teacher_path(path)
    try:
        return load_checkpoint(p, device="cpu")
    except CheckpointError as e:
        raise TeacherError(f"distill.teacher: {e}") from e
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: say which and why
        raise TeacherError(
            f"distill.teacher={p} cannot be loaded as a thawkit checkpoint "
            f"({type(e).__name__}: {e}). Pass the best.ckpt or last.ckpt of a thawkit run."
        ) from e


def class_index(teacher_classes: Sequence[str], data_classes: Sequence[str], path: Any) -> list:
    """The teacher's logit column of every data class; a `TeacherError` unless the names match."""
    teacher, data = list(teacher_classes), list(data_classes)
    missing = [c for c in data if c not in teacher]
    extra = [c for c in teacher if c not in data]
    if missing or extra or len(teacher) != len(data):
        raise TeacherError(
            f"distill.teacher={path} was trained on {len(teacher)} classes {teacher[:10]}; the "
            f"data has {len(data)} {data[:10]} (not in the teacher: {missing[:10]}; only in the "
            f"teacher: {extra[:10]}). A teacher must know exactly the data's classes, by name: "
            "train one on this data first (python train.py data.root=... model=...)."
        )
    return [teacher.index(c) for c in data]


def teacher_val_acc(loaded: LoadedModel) -> float | None:
    """The teacher's best validation accuracy: its run's summary.json, else its checkpoint."""
    summary = loaded.run_dir / "summary.json"
    try:
        value = json.loads(summary.read_text(encoding="utf-8")).get("best", {}).get("val/acc")
        if value is not None:
            return float(value)
    except (OSError, ValueError, AttributeError):
        pass
    ckpt = torch.load(loaded.path, map_location="cpu", weights_only=True, mmap=True)
    for key, state in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict):
            score = state.get("best_model_score")
            if state.get("monitor") == "val/acc" and score is not None:
                return float(score)
    return None


def build_distillation(
    class_names: Sequence[str],
    teacher: str | None = DistillSchema.teacher,
    weight: float = DistillSchema.weight,
    temperature: float = DistillSchema.temperature,
) -> Distillation | None:
    """The distillation callback of the `distill` config (None when `teacher` is null).

    Args:
        class_names: the data's classes (the teacher's are matched to them by name).
        teacher: path of a thawkit checkpoint trained on the data's classes.
        weight: share of the teacher term in the loss.
        temperature: softmax temperature of the teacher term.
    """
    if not teacher:
        return None
    loaded = load_teacher(teacher)
    index = class_index(loaded.class_names, class_names, teacher)
    record = {
        "teacher": str(loaded.path.resolve()),
        "backbone": loaded.module.hparams.backbone,
        "image_size": loaded.image_size,
        "val_acc": teacher_val_acc(loaded),
    }
    log.info(
        "Distilling from %s (%s, %d px, val/acc %s)",
        loaded.path,
        record["backbone"],
        loaded.image_size,
        record["val_acc"],
    )
    return Distillation(
        loaded.module,
        loaded.preprocessing,
        loaded.image_size,
        weight=weight,
        temperature=temperature,
        class_index=None if index == list(range(len(index))) else index,
        record=record,
    )
