"""The progress display: a compact rich bar on a terminal, one plain line per epoch elsewhere.

`progress_bar()` (src/thawkit/conf/callbacks/default.yaml) picks by where stdout goes. On a
terminal, `EpochBars` keeps one finished rich bar per epoch, with the running loss and the
monitored metric only, so a bar fits an 80-column terminal. In a log file, a pipe or CI a live
bar would leave redraw fragments and wrapped metric columns, so `EpochLines` logs one line per
epoch with the epoch's metrics (through logging, so the run's train.log has them too).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import (
    BatchesProcessedColumn,
    CustomBarColumn,
    CustomTimeColumn,
)
from rich.progress import TextColumn

log = logging.getLogger(__name__)


def _monitored(trainer: L.Trainer) -> str:
    ckpt = trainer.checkpoint_callback
    return str(getattr(ckpt, "monitor", None) or "val/acc")


def epoch_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The epoch's progress-bar metrics (`prog_bar=True`), epoch values only, by plain name."""
    shown: dict[str, float] = {}
    for key, value in trainer.progress_bar_metrics.items():
        if key.endswith("_step"):
            continue
        shown[key.removesuffix("_epoch")] = float(value)

    # train/* first, then val/*, ...; in each, the loss first.
    def order(key: str) -> tuple[bool, str, bool, str]:
        stage, _, name = key.partition("/")
        return stage != "train", stage, name != "loss", name

    return {k: shown[k] for k in sorted(shown, key=order)}


class EpochLines(ProgressBar):
    """One log line per finished epoch: `Epoch 3/10  train/loss 0.41  val/acc 0.912  ... 12.3 s`."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = time.perf_counter()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled:
            return
        # Validation ran before this hook: the epoch's val/* metrics are in.
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        values = "  ".join(f"{k} {v:.4g}" for k, v in epoch_metrics(trainer).items())
        seconds = time.perf_counter() - self._started
        log.info("Epoch %d/%s  %s  (%.1f s)", trainer.current_epoch + 1, total, values, seconds)


class EpochBars(RichProgressBar):
    """Lightning's rich bar, one kept per epoch, showing the loss and the monitored metric."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("leave", True)
        super().__init__(**kwargs)

    def configure_columns(self, trainer: L.Trainer) -> list:
        # Lightning's columns without the speed column and with a shorter bar: with the two
        # metrics Lightning appends, a bar fits 80 columns instead of wrapping.
        return [
            TextColumn("[progress.description]{task.description}"),
            CustomBarColumn(
                bar_width=16,
                complete_style=self.theme.progress_bar,
                finished_style=self.theme.progress_bar_finished,
                pulse_style=self.theme.progress_bar_pulse,
            ),
            BatchesProcessedColumn(style=self.theme.batch_progress),
            CustomTimeColumn(style=self.theme.time),
        ]

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = trainer.progress_bar_metrics
        shown: dict[str, Any] = {}
        loss = metrics.get("train/loss_step", metrics.get("train/loss"))
        if loss is not None:
            shown["loss"] = f"{float(loss):.3f}"
        monitored = _monitored(trainer)
        if monitored in metrics:
            shown[monitored] = f"{float(metrics[monitored]):.3f}"
        return shown


def progress_bar(terminal: bool | None = None) -> ProgressBar:
    """`EpochBars` when stdout is a terminal (or `terminal=True`), else `EpochLines`."""
    if terminal is None:
        terminal = sys.stdout.isatty()
    return EpochBars() if terminal else EpochLines()
