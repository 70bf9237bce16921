"""What a model gets wrong: the images with the highest loss and the most confused class pairs.

`evaluate.py` draws the top-losses grid of the images it evaluates; every training run draws it
for its validation split (`thawkit.reporting.val_report`), next to the most-confused-pairs
table. Both read class probabilities (N, C) and true labels (N,), nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from thawkit.data import folder
from thawkit.reporting.plots import image_grid_figure, new_figure, short

THUMBNAIL = 160  # pixels: top-loss images are shown at this size


def losses(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-image cross-entropy -log p(true class)."""
    true_prob = probs[np.arange(len(labels)), labels]
    return -np.log(np.clip(true_prob, 1e-12, 1.0))


def top_losses(
    paths: Sequence[str], labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str], n: int
) -> list[dict[str, Any]]:
    """The `n` images with the highest loss, highest first (summary.json's `top_losses`)."""
    loss = losses(labels, probs)
    order = np.argsort(-loss, kind="stable")[:n].tolist()
    rows = []
    for i in order:
        pred = int(probs[i].argmax())
        rows.append(
            {
                "path": str(paths[i]),
                "true": class_names[labels[i]],
                "predicted": class_names[pred],
                "probability": round(float(probs[i, pred]), 6),
                "prob_true": round(float(probs[i, labels[i]]), 6),
                "loss": round(float(loss[i]), 6),
            }
        )
    return rows


def top_losses_figure(
    paths: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    n: int = 16,
) -> tuple[Any, list[int]]:
    """The `n` images with the highest loss (confidently wrong first), titled true -> predicted.

    Returns:
        The figure and the indices of the images shown, in order.
    """
    loss = losses(labels, probs)
    order = np.argsort(-loss, kind="stable")[:n].tolist()
    images, titles, colours = [], [], []
    for i in order:
        img = folder.load_rgb(paths[i])
        img.thumbnail((THUMBNAIL, THUMBNAIL))  # large photos: decode once, keep small
        images.append(np.asarray(img))
        pred = int(probs[i].argmax())
        titles.append(
            f"{short(class_names[labels[i]])} -> {short(class_names[pred])}\n"
            f"p={probs[i, pred]:.2f} loss={loss[i]:.2f}"
        )
        colours.append("black" if pred == labels[i] else "tab:red")
    wrong = int((probs.argmax(axis=1) != labels).sum())
    title = f"Top losses: {wrong} of {len(labels)} misclassified (red; true -> predicted)"
    return image_grid_figure(images, titles, title, THUMBNAIL, colours), order


def confused_pairs(
    labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str], n: int = 10
) -> list[dict[str, Any]]:
    """The `n` (true, predicted) pairs of different classes seen most often, most first.

    `fraction` is the share of the true class's images that went to the predicted class.
    """
    k = len(class_names)
    preds = probs.argmax(axis=1)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (labels, preds), 1)
    support = counts.sum(axis=1)
    np.fill_diagonal(counts, 0)
    pairs = [(int(counts[t, p]), t, p) for t in range(k) for p in range(k) if counts[t, p] > 0]
    pairs.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [
        {
            "true": class_names[t],
            "predicted": class_names[p],
            "count": count,
            "fraction": round(count / int(support[t]), 4),
        }
        for count, t, p in pairs[:n]
    ]


def confused_pairs_markdown(pairs: Sequence[dict[str, Any]]) -> str:
    """The pairs as a Markdown table (TensorBoard's text tab renders it)."""
    if not pairs:
        return "No validation image was misclassified."
    lines = ["| true | predicted | images | share of true class |", "|---|---|---|---|"]
    lines += [
        f"| {p['true']} | {p['predicted']} | {p['count']} | {p['fraction']:.1%} |" for p in pairs
    ]
    return "\n".join(lines)


def confused_pairs_figure(pairs: Sequence[dict[str, Any]], title: str) -> Any:
    """The pairs as horizontal bars, the most confused on top."""
    fig = new_figure(6.5, 0.8 + 0.35 * max(1, len(pairs)))
    ax = fig.add_subplot()
    if not pairs:
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        ax.set_axis_off()
    else:
        names = [f"{short(p['true'])} -> {short(p['predicted'])}" for p in pairs]
        counts = [p["count"] for p in pairs]
        bars = ax.barh(range(len(pairs)), counts, color="tab:red")
        ax.set_yticks(range(len(pairs)), names)
        ax.invert_yaxis()
        ax.bar_label(bars, [f"{p['count']} ({p['fraction']:.0%})" for p in pairs], padding=2)
        ax.set_xlabel("images (share of the true class)")
        ax.set_xlim(0, max(counts) * 1.3)
    ax.set_title(title)
    return fig
