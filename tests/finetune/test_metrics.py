"""Macro metrics average over the classes that have samples in what was evaluated."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import f1_score, recall_score

from thawkit.finetune.metrics import stage_metrics


def test_macro_leaves_out_a_class_without_samples() -> None:
    # Class 2 has no samples but is predicted twice; class 0 is never right.
    target = torch.tensor([0, 0, 1, 1, 1, 1, 1])
    preds = torch.tensor([1, 2, 1, 1, 2, 0, 0])
    metrics = stage_metrics(3, "val/")
    metrics.update(torch.nn.functional.one_hot(preds, 3).float(), target)
    got = {k: float(v) for k, v in metrics.compute().items()}
    present = [0, 1]
    assert got["val/recall_macro"] == pytest.approx(
        recall_score(target, preds, labels=present, average="macro", zero_division=0)
    )
    assert got["val/recall_macro"] == pytest.approx(0.2)  # (0 + 2/5) / 2, not (0 + 0.4 + 0) / 3
    assert got["val/f1_macro"] == pytest.approx(
        f1_score(target, preds, labels=present, average="macro", zero_division=0)
    )
