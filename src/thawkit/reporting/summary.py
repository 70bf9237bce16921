"""RunSummary: writes the run's `summary.json`, the record that sweeps, benchmarks and tests read,
and draws the run's `plots/` from it."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L

from thawkit.atomic import write_json_atomic
from thawkit.finetune.module import FineTuneModule
from thawkit.finetune.unfreeze import UnfreezeSchedule
from thawkit.reporting.diagnosis import assess
from thawkit.reporting.plots import write_run_plots
from thawkit.reporting.status import run_status

log = logging.getLogger(__name__)


def _num(v: Any) -> float:
    return float(v.item() if hasattr(v, "item") else v)


def write_setup_failure(output_dir: str | os.PathLike, exception: BaseException) -> Path:
    """`summary.json` of a run that failed before training started (config, data, model).

    A run that reached training writes its summary through `RunSummary`; this one records
    only how it ended (`status`, `error`), and names the error in the log (`train.log`). An
    existing `summary.json` (a resumed run's) is left as it is.
    """
    status, error = run_status(exception)
    log.error("The run failed during set-up: %s", error)
    path = Path(output_dir) / "summary.json"
    if path.exists():  # a resumed run's dir: its summary of the epochs trained stays
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"status": status, "error": error, "stage": "setup"})
    return path


class RunSummary(L.Callback):
    """Collects per-epoch history and writes `summary.json` and `plots/` after fit and after test.

    Args:
        output_dir: the run dir (summary.json goes there).
        strategy: strategy name; seed: the run's seed (recorded).
        monitor, mode: the metric that picks the best epoch (as the checkpoint callback does).
        extra: more fields recorded as they are (e.g. class_counts, skipped_files).
        plots: also draw `plots/` (curves, confusion matrix, class counts) next to summary.json.
    """

    def __init__(
        self,
        output_dir: str,
        strategy: str = "",
        seed: int | None = None,
        monitor: str = "val/acc",
        mode: str = "max",
        extra: dict[str, Any] | None = None,
        plots: bool = True,
    ) -> None:
        self.path = Path(output_dir) / "summary.json"
        self.strategy, self.seed = strategy, seed
        self.monitor, self.mode = monitor, mode
        self.extra = dict(extra or {})
        self.plots = plots
        # Validation confusion matrix of every epoch ({epoch: rows}); the test one after test.
        self.confusion: dict[int, list[list[int]]] = {}
        self.test_confusion: list[list[int]] | None = None
        self.unfreeze_events: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.test: dict[str, float] = {}
        self.train_time = 0.0
        self.images = 0
        self._epoch_start = 0.0
        # completed | interrupted | failed (with `error`), as in
        # thawkit.reporting.status.run_status.
        self.status = "completed"
        self.error: str | None = None
        # The run's model when a step after fit made one (swa.ckpt, wiseft.ckpt: thawkit.run.
        # weight_space), relative to the run dir; None = the best checkpoint.
        self.checkpoint: str | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed mid-epoch starts timing here (no on_train_epoch_start for that epoch).
        self._epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # Under DDP each rank sees its shard: count the images of all ranks (throughput).
        self.images += len(batch[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        if trainer.sanity_checking:
            return
        elapsed = time.perf_counter() - self._epoch_start
        self.train_time += elapsed
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "trainable_params": pl_module.count_params(trainable=True),
            "total_params": pl_module.count_params(),
            "frozen_groups": len(pl_module.backbone.groups) - pl_module.num_trainable_groups,
            "lr": pl_module.group_lrs(),
        }
        for key in (
            "train/loss_epoch",
            "train/acc",
            "val/loss",
            "val/acc",
            "val/f1_macro",
            "val/recall_macro",
            "train/da_loss_epoch",
            "train/kd_loss_epoch",
            "train/ce_loss_epoch",
            "target/loss",
            "target/acc",
            "target/f1_macro",
        ):
            if key in metrics:
                row[key.replace("_epoch", "")] = _num(metrics[key])
        confusion = getattr(pl_module, "confusion", {}).get("val")
        if confusion is not None:
            self.confusion[trainer.current_epoch] = confusion.long().tolist()
            totals = confusion.sum(dim=1).clamp(min=1)
            recall = (confusion.diagonal() / totals).tolist()
            names = pl_module.hparams.class_names
            row["val/recall_per_class"] = {
                name: round(r, 4) for name, r in zip(names, recall, strict=True)
            }
        row["epoch_time_s"] = round(elapsed, 3)
        schedule = next((c for c in trainer.callbacks if isinstance(c, UnfreezeSchedule)), None)
        if schedule is not None:
            self.unfreeze_events = [dict(e) for e in schedule.events]
        self.history.append(row)

    def on_exception(
        self, trainer: L.Trainer, pl_module: FineTuneModule, exception: BaseException
    ) -> None:
        self.status, self.error = run_status(exception)
        self.write(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        if trainer.is_global_zero and self.history:
            # Debug: a run's console shows it in its result block (thawkit.run.console).
            log.debug("Fit diagnosis: %s", assess(self.history))
        self.write(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        self.test = {
            k: _num(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")
        }
        confusion = getattr(pl_module, "confusion", {}).get("test")
        if confusion is not None:
            self.test_confusion = confusion.long().tolist()
        # Fit already drew the curves and class counts; only the test matrix is new.
        self.write(trainer, pl_module, plots=["confusion_matrix_test"])

    def best(self) -> dict[str, Any]:
        rows = [r for r in self.history if self.monitor in r]
        if not rows:
            return {}
        pick = max if self.mode == "max" else min
        best = pick(rows, key=lambda r: r[self.monitor])  # first of equals, as checkpointing
        keys = ("epoch", "val/acc", "val/loss", "val/f1_macro", "target/acc")
        return {k: best[k] for k in keys if k in best}

    def confusion_matrices(self) -> dict[str, dict[str, Any]]:
        """Validation matrix of the best epoch and the test matrix (rows: true class)."""
        out: dict[str, dict[str, Any]] = {}
        epoch = self.best().get("epoch")
        if epoch is None and self.confusion:
            epoch = max(self.confusion)
        if epoch in self.confusion:
            out["val"] = {"epoch": epoch, "matrix": self.confusion[epoch]}
        if self.test_confusion is not None:
            out["test"] = {"matrix": self.test_confusion}
        return out

    def summary(self, trainer: L.Trainer, pl_module: FineTuneModule) -> dict[str, Any]:
        hp = pl_module.hparams
        diagnosis = assess(self.history)
        ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        if self.checkpoint:
            ckpt = self.checkpoint
        elif ckpt:
            try:
                ckpt = os.path.relpath(ckpt, self.path.parent)
            except ValueError:
                pass
        return {
            "status": self.status,
            "error": self.error,
            "strategy": self.strategy,
            "backbone": hp.backbone,
            "weights": str(hp.weights),
            "num_classes": hp.num_classes,
            "class_names": list(hp.class_names),
            "seed": self.seed,
            "best": self.best(),
            "test": self.test,
            "history": self.history,
            "train_time_s": round(self.train_time, 3),
            "images_per_s": round(self.images / self.train_time, 2) if self.train_time else 0.0,
            "checkpoint": ckpt,
            "diagnosis": str(diagnosis),
            "diagnosis_detail": diagnosis.to_dict(),
            "unfreeze_events": self.unfreeze_events,
            "confusion_matrix": self.confusion_matrices(),
            "preprocessing": pl_module.backbone.preprocessing.to_dict(),
            **self.extra,
        }

    def write(
        self, trainer: L.Trainer, pl_module: FineTuneModule, plots: list[str] | None = None
    ) -> None:
        """Write summary.json and the plots named in `plots` (None = all; see write_run_plots)."""
        if not trainer.is_global_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        summary = self.summary(trainer, pl_module)
        write_json_atomic(self.path, summary)
        log.info("Wrote %s", self.path)
        if self.plots:
            written = write_run_plots(summary, self.path.parent / "plots", only=plots)
            log.info("Wrote %s", ", ".join(str(p) for p in written.values()))

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "train_time": self.train_time,
            "images": self.images,
            "confusion": self.confusion,
            "unfreeze_events": self.unfreeze_events,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Testing the best checkpoint after fit restores callbacks too: keep the full history.
        if self.history:
            return
        self.history = list(state_dict["history"])
        self.train_time = state_dict["train_time"]
        self.images = state_dict["images"]
        self.confusion = {int(k): v for k, v in state_dict.get("confusion", {}).items()}
        self.unfreeze_events = list(state_dict.get("unfreeze_events", []))
