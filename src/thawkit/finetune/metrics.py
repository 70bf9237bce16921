"""The classification metrics a fine-tuning run logs per stage, and its confusion matrices."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)

# Stages whose confusion matrix (rows: true class) is kept for the reports.
CONFUSION_STAGES = ("val", "test")


def stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Accuracy, macro F1 and macro recall, logged as `<prefix>acc` and so on."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
            "recall_macro": MulticlassRecall(num_classes, average="macro"),
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
