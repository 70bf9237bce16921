"""A fit verdict from a run's history: good fit, overfitting, underfitting or stopped too late.

The verdict reads the per-epoch rows of `summary.json["history"]` (train/acc, val/acc,
val/loss) and names the numbers behind it and the textbook remedy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

GAP = 0.10  # train accuracy this far above validation accuracy counts as a generalisation gap
LOW = 0.70  # accuracy below this on both train and validation counts as low
RISE = 0.10  # validation loss this fraction above its minimum counts as rising
FLAT = 0.02  # validation accuracy gaining less than this over the last epochs counts as flat

VERDICTS = ("good fit", "overfitting", "underfitting", "stopped too late", "no verdict")

REMEDIES = {
    "overfitting": "regularise (stronger augmentation, mixup/cutmix, weight decay, dropout), "
    "more data, early stopping on val/loss, or fewer trainable layer groups",
    "underfitting": "more capacity (unfreeze more layer groups, a larger backbone or an mlp "
    "head), a higher learning rate, or more epochs",
    "underfitting, still improving": "more epochs (accuracy is still rising), then more "
    "capacity if it levels off low",
    "stopped too late": "early stopping on val/loss (callbacks.early_stopping.patience), fewer "
    "epochs, or use the best checkpoint (saved as checkpoints/best.ckpt)",
    "good fit": "none needed; to gain more, try more data or a larger backbone",
    "no verdict": "let at least one validation epoch finish",
}


@dataclass
class Diagnosis:
    """A verdict, why, the numbers behind it and the remedy."""

    verdict: str
    reason: str
    remedy: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in self.numbers.items() if v is not None)
        text = f"{self.verdict}: {self.reason}"
        if shown:
            text += f" ({shown})"
        return f"{text}. Remedy: {self.remedy}."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def assess(history: Sequence[dict[str, Any]]) -> Diagnosis:
    """Judge the fit from per-epoch history rows (keys `epoch`, `train/acc`, `val/acc`, `val/loss`).

    Rules, in order: both accuracies low -> underfitting (still improving or flat);
    train accuracy more than `GAP` above validation with validation loss rising more than
    `RISE` above its minimum (or a gap over twice `GAP`) -> overfitting; validation loss rising
    from a minimum reached before the last epoch -> stopped too late; else good fit.
    """
    rows = [r for r in history if r.get("val/acc") is not None]
    if not rows:
        return Diagnosis("no verdict", "no validation epoch finished", REMEDIES["no verdict"])
    last = rows[-1]
    best = max(rows, key=lambda r: r["val/acc"])  # first of equals, as checkpointing does
    train_acc, val_acc = last.get("train/acc"), last["val/acc"]
    loss_rows = [r for r in rows if r.get("val/loss") is not None]
    min_row = min(loss_rows, key=lambda r: r["val/loss"]) if loss_rows else None
    val_loss = last.get("val/loss")
    rise = (
        val_loss / min_row["val/loss"] - 1
        if min_row is not None and val_loss is not None and min_row["val/loss"] > 0
        else 0.0
    )
    gap = train_acc - val_acc if train_acc is not None else 0.0
    recent = [r["val/acc"] for r in rows[-3:]]
    trend = recent[-1] - recent[0]
    numbers = {
        "train_acc": _r(train_acc),
        "val_acc": _r(val_acc),
        "gap": _r(gap),
        "best_val_acc": _r(best["val/acc"]),
        "best_epoch": best.get("epoch"),
        "val_loss": _r(val_loss, 4),
        "min_val_loss": _r(min_row["val/loss"], 4) if min_row else None,
        "min_val_loss_epoch": min_row.get("epoch") if min_row else None,
        "val_loss_rise": _r(rise),
        "val_acc_trend": _r(trend),
        "epochs": len(rows),
    }

    def verdict(name: str, reason: str, remedy: str | None = None) -> Diagnosis:
        return Diagnosis(name, reason, REMEDIES[remedy or name], numbers)

    rising = rise > RISE
    if (train_acc is None or train_acc < LOW) and val_acc < LOW:
        low = f"train acc {_r(train_acc)} and val acc {val_acc:.3f} both below {LOW}"
        if len(recent) > 1 and trend >= FLAT:
            return verdict(
                "underfitting",
                f"{low}, val acc still rising ({trend:+.3f} over the last {len(recent)} epochs)",
                "underfitting, still improving",
            )
        return verdict("underfitting", f"{low} and flat ({trend:+.3f} over the last epochs)")
    if gap > GAP and (rising or gap > 2 * GAP):
        why = f"train acc {train_acc:.3f} exceeds val acc {val_acc:.3f} by {gap:.3f}"
        if rising:
            why += f" and val loss rose {rise:.0%} above its minimum (epoch {min_row['epoch']})"
        return verdict("overfitting", why)
    if rising and min_row is not None and min_row.get("epoch") != last.get("epoch"):
        return verdict(
            "stopped too late",
            f"val loss rose {rise:.0%} above its minimum at epoch {min_row['epoch']} by the last "
            f"epoch {last.get('epoch')}; best val acc {best['val/acc']:.3f} at epoch "
            f"{best.get('epoch')}",
        )
    return verdict(
        "good fit",
        f"val acc {val_acc:.3f} (best {best['val/acc']:.3f}), train-val gap {gap:.3f}, "
        f"val loss within {RISE:.0%} of its minimum",
    )


def diagnose(history: Sequence[dict[str, Any]]) -> str:
    """One line of verdict, reason, numbers and remedy (`summary.json["diagnosis"]`)."""
    return str(assess(history))
