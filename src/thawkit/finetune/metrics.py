"""The classification metrics a fine-tuning run logs per stage, and its confusion matrices."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassStatScores,
)

# Stages whose confusion matrix (rows: true class) is kept for the reports.
CONFUSION_STAGES = ("val", "test")


class PresentClassMacro(MulticlassStatScores):
    """Macro recall or F1 over the classes that have samples among the targets seen.

    torchmetrics' own macro averaging keeps a class without samples that was predicted, at
    recall 0: a class absent from the validation folder would lower `val/recall_macro` of every
    run. This averages as `evaluate.py` does (scikit-learn with `labels=` the classes present),
    so TensorBoard, `summary.json` and `metrics.json` agree. The states are torchmetrics'
    per-class counts, summed across DDP ranks as usual.
    """

    def __init__(self, num_classes: int, score: str) -> None:
        if score not in ("recall", "f1"):
            raise ValueError(f"score={score!r} is not 'recall' or 'f1'")
        super().__init__(num_classes, average=None)
        self.score = score

    def compute(self) -> torch.Tensor:
        tp, fp, _, fn = self._final_state()
        support = tp + fn
        if self.score == "recall":
            per_class = tp / support.clamp(min=1)
        else:
            per_class = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
        present = support > 0
        if not present.any():
            return torch.zeros((), device=tp.device)
        return per_class[present].float().mean()


def stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Accuracy, macro F1 and macro recall, logged as `<prefix>acc` and so on.

    The macro averages are over the classes with samples in the stage (`PresentClassMacro`).
    """
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1_macro": PresentClassMacro(num_classes, "f1"),
            "recall_macro": PresentClassMacro(num_classes, "recall"),
        },
        prefix=prefix,
    )


def confusion_matrices(num_classes: int) -> torch.nn.ModuleDict:
    """One confusion matrix per stage of `CONFUSION_STAGES`."""
    return torch.nn.ModuleDict(
        {stage: MulticlassConfusionMatrix(num_classes) for stage in CONFUSION_STAGES}
    )


def finish_confusion(metric: MulticlassConfusionMatrix) -> torch.Tensor | None:
    """The epoch's matrix (on the CPU), or None if nothing was seen; the metric is reset."""
    matrix = metric.compute().cpu() if metric.update_called else None
    metric.reset()
    return matrix
