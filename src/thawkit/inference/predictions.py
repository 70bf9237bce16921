"""Predictions as predict.py reports them: the top-k classes of each image, its CSV and its line.

With `min_confidence`, a row whose top probability is below it is `uncertain`: the CSV gains a
`label` column (class_1, or `uncertain`) and the printout says so, instead of forcing a class.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from thawkit.textio import open_text

UNCERTAIN = "uncertain"  # the CSV's label of a row below min_confidence


@dataclass
class Prediction:
    """Top-k classes and probabilities of one image."""

    path: str
    classes: list[str]
    probabilities: list[float]
    error: str = ""
    # The top probability is below `min_confidence`: the CSV's label is `uncertain`.
    uncertain: bool = False

    @property
    def label(self) -> str:
        """The top class, `uncertain` below min_confidence, '' for an unreadable file."""
        return UNCERTAIN if self.uncertain else (self.classes[0] if self.classes else "")


def rank(
    probs: torch.Tensor,
    class_names: Sequence[str],
    paths: Sequence[Path],
    errors: Sequence[str],
    k: int,
    min_confidence: float = 0.0,
) -> list[Prediction]:
    """The k most probable classes of every image; `uncertain` where the top one is below
    `min_confidence`."""
    k = min(k, len(class_names))
    values, indices = probs.nan_to_num(-1.0).topk(k, dim=1)
    out = []
    for path, vals, idx, err in zip(paths, values.tolist(), indices.tolist(), errors, strict=True):
        if err:
            out.append(Prediction(str(path), [], [], err))
        else:
            names = [class_names[i] for i in idx]
            out.append(Prediction(str(path), names, vals, uncertain=vals[0] < min_confidence))
    return out


def write_csv(
    predictions: Sequence[Prediction], k: int, path: str | os.PathLike, label: bool = False
) -> Path:
    """CSV with columns path, class_1, prob_1, ..., class_k, prob_k, error; with `label`, a
    `label` column after path: class_1, or `uncertain` below min_confidence.

    File names keep their own bytes, also those that are not UTF-8 (`thawkit.textio`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_text(path, "w", newline="") as f:
        writer = csv.writer(f)
        ranks = [c for r in range(1, k + 1) for c in (f"class_{r}", f"prob_{r}")]
        writer.writerow(["path"] + ["label"] * label + ranks + ["error"])
        for p in predictions:
            ranked = [
                v
                for c, pr in zip(p.classes, p.probabilities, strict=True)
                for v in (c, f"{pr:.6f}")
            ]
            first = [p.path] + [p.label] * label
            writer.writerow(first + ranked + [""] * (2 * k - len(ranked)) + [p.error])
    return path


def format_prediction(p: Prediction) -> str:
    """`path: daisy 0.931 | tulip 0.052 | rose 0.011`."""
    if p.error:
        return f"{p.path}: unreadable ({p.error})"
    ranked = " | ".join(f"{c} {pr:.3f}" for c, pr in zip(p.classes, p.probabilities, strict=True))
    return f"{p.path}: {UNCERTAIN + ' (' + ranked + ')' if p.uncertain else ranked}"
