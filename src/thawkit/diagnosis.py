"""A fit verdict from a run's history: good fit, overfitting, underfitting or stopped too late."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

GAP = 0.10  # train accuracy this far above validation accuracy counts as a generalisation gap
LOW = 0.70  # accuracy below this on both train and validation counts as low
RISE = 0.10  # validation loss this fraction above its best counts as rising


def diagnose(history: Sequence[dict[str, Any]]) -> str:
    """Verdict with the numbers behind it and the textbook remedy."""
    rows = [r for r in history if r.get("val/acc") is not None]
    if not rows:
        return "no verdict: no validation epoch finished"
    best = max(rows, key=lambda r: r["val/acc"])
    last = rows[-1]
    train_acc = last.get("train/acc")
    val_acc, val_loss = last["val/acc"], last.get("val/loss")
    losses = [r["val/loss"] for r in rows if r.get("val/loss") is not None]
    min_loss = min(losses) if losses else None
    rising = bool(val_loss is not None and min_loss and val_loss > min_loss * (1 + RISE))
    gap = (train_acc - val_acc) if train_acc is not None else 0.0
    numbers = (
        f"final train acc {train_acc if train_acc is None else round(train_acc, 3)}, "
        f"val acc {val_acc:.3f} (best {best['val/acc']:.3f} at epoch {best['epoch']}), "
        f"val loss {val_loss if val_loss is None else round(val_loss, 4)} "
        f"(min {min_loss if min_loss is None else round(min_loss, 4)})"
    )
    if gap > GAP and rising:
        return (
            f"overfitting: train acc exceeds val acc by {gap:.3f} and val loss rose "
            f"{(val_loss / min_loss - 1):.0%} above its minimum; {numbers}. Remedy: regularise "
            "(stronger augmentation, mixing, weight decay), more data, early stopping, or "
            "fewer trainable groups."
        )
    if (train_acc is None or train_acc < LOW) and val_acc < LOW:
        recent = [r["val/acc"] for r in rows[-3:]]
        trend = recent[-1] - recent[0]
        return (
            f"underfitting: accuracy stays low (val acc change over the last epochs "
            f"{trend:+.3f}); {numbers}. Remedy: more capacity (unfreeze more groups), a higher "
            "learning rate, or more epochs."
        )
    if rising and best["epoch"] < last["epoch"]:
        return (
            f"stopped too late: val loss rose {(val_loss / min_loss - 1):.0%} above its minimum "
            f"after epoch {best['epoch']}; {numbers}. Remedy: early stopping on val/loss, or "
            "use the best checkpoint (saved)."
        )
    return f"good fit: {numbers}."
