"""The reliability diagram: how often the model is right at each confidence, before and after
temperature scaling (`thawkit.finetune.calibration`).

A calibrated model's bars sit on the diagonal: of the images it gives 80% confidence, 80% are
right. Bars below the diagonal are over-confidence (the usual state of a fine-tuned network).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from thawkit.finetune.calibration import ECE_BINS
from thawkit.reporting.plots import new_figure


def reliability_bins(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Per equal-width confidence bin: its range, mean confidence, accuracy and image count."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]], as torchmetrics' ECE bins them.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for i in range(bins):
        inside = index == i
        n = int(inside.sum())
        rows.append(
            {
                "low": float(edges[i]),
                "high": float(edges[i + 1]),
                "confidence": float(confidence[inside].mean()) if n else float("nan"),
                "accuracy": float(correct[inside].mean()) if n else float("nan"),
                "count": n,
            }
        )
    return rows


def _panel(ax: Any, rows: list[dict[str, float]], title: str) -> None:
    width = rows[0]["high"] - rows[0]["low"]
    lows = np.array([r["low"] for r in rows])
    acc = np.array([r["accuracy"] if r["count"] else 0.0 for r in rows])
    conf = np.array([r["confidence"] if r["count"] else 0.0 for r in rows])
    filled = np.array([r["count"] > 0 for r in rows])
    ax.bar(lows, acc, width=width, align="edge", color="tab:blue", edgecolor="white",
           label="accuracy")  # fmt: skip
    # The gap to the bin's mean confidence: red above the bar = over-confident.
    ax.bar(lows[filled], (conf - acc)[filled], bottom=acc[filled], width=width, align="edge",
           color="tab:red", alpha=0.35, edgecolor="tab:red", label="gap to confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class probability)")
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")


def reliability_figure(
    probs_before: np.ndarray,
    probs_after: np.ndarray,
    labels: np.ndarray,
    record: dict[str, Any],
    title: str = "Validation reliability",
) -> Any:
    """Two reliability diagrams side by side: the raw softmax and the temperature-scaled one."""
    bins = int(record.get("bins", ECE_BINS))
    fig = new_figure(8.0, 4.3)
    left, right = fig.subplots(1, 2, sharey=True)
    _panel(left, reliability_bins(probs_before, labels, bins),
           f"before: ECE {record['ece_before']:.3f}, NLL {record['nll_before']:.3f}")  # fmt: skip
    _panel(right, reliability_bins(probs_after, labels, bins),
           f"T = {record['temperature']:.2f}: ECE {record['ece_after']:.3f}, "
           f"NLL {record['nll_after']:.3f}")  # fmt: skip
    left.set_ylabel("accuracy")
    left.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{title} ({len(labels)} images, {bins} bins)")
    return fig
