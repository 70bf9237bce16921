"""After fit: the best checkpoint on the validation split, once, for calibration and mistakes.

`ValidationReport` (`callbacks.val_report`) loads `best.ckpt`, collects its validation logits
once, and from them
- fits the temperature (`thawkit.finetune.calibration`) and writes it into `best.ckpt`, so that
  predict, evaluate and export use calibrated probabilities;
- records `calibration` (temperature, NLL and ECE before and after) and `mistakes` (top losses,
  most-confused pairs, on the calibrated probabilities) in summary.json;
- draws `plots/reliability.png`, `plots/top_losses.png` and `plots/confused_pairs.png`, and the
  same figures (and the pairs as a table) in TensorBoard under `val/`.

It runs before RunSummary writes summary.json at the end of fit (callbacks from the config come
first in the trainer's list, thawkit.run.train).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from thawkit.config.schema import ValReportSchema, check_args
from thawkit.console import quiet_loggers
from thawkit.data.datasets import ImageDataset
from thawkit.data.loaders import build_loader
from thawkit.data.transforms import eval_transform
from thawkit.finetune.calibration import (
    calibration_record,
    collect_logits,
    fit_temperature,
    write_temperature,
)
from thawkit.finetune.module import FineTuneModule
from thawkit.reporting.calibration import reliability_figure
from thawkit.reporting.mistakes import (
    confused_pairs,
    confused_pairs_figure,
    confused_pairs_markdown,
    top_losses,
    top_losses_figure,
)
from thawkit.reporting.plots import figure_to_array, save_png
from thawkit.reporting.summary import RunSummary
from thawkit.reporting.tensorboard import RunViews

log = logging.getLogger(__name__)


class ValidationReport(L.Callback):
    """Temperature scaling, reliability diagram, top losses and confused pairs after fit.

    Args:
        calibrate: fit the temperature and store it in best.ckpt (else T stays 1).
        bins: confidence bins of the ECE and the reliability diagram.
        top_losses: validation images in the top-losses grid (0 = none).
        confused_pairs: rows of the most-confused-pairs table.
    """

    def __init__(
        self,
        calibrate: bool = ValReportSchema.calibrate,
        bins: int = ValReportSchema.bins,
        top_losses: int = ValReportSchema.top_losses,
        confused_pairs: int = ValReportSchema.confused_pairs,
    ) -> None:
        check_args(ValReportSchema, "callbacks.val_report", bins=bins, top_losses=top_losses)
        check_args(ValReportSchema, "callbacks.val_report", confused_pairs=confused_pairs)
        self.calibrate, self.bins = calibrate, bins
        self.top_losses, self.confused_pairs = top_losses, confused_pairs

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.report(trainer, pl_module)
        trainer.strategy.barrier()  # other ranks test best.ckpt only once it holds T

    def report(
        self, trainer: L.Trainer, pl_module: L.LightningModule, ckpt: str | None = None
    ) -> None:
        """Calibrate and report the checkpoint `ckpt` (None: the best one)."""
        ckpt_cb = trainer.checkpoint_callback
        best = getattr(ckpt_cb, "best_model_path", "") if ckpt_cb is not None else ""
        best = ckpt or best
        datamodule = getattr(trainer, "datamodule", None)
        samples = getattr(datamodule, "splits", {}).get("val") if datamodule else None
        if not best or not Path(best).is_file() or not samples:
            log.debug("No best checkpoint or no validation split: no calibration, no mistakes")
            return
        with quiet_loggers("thawkit.models.weights"):
            module = FineTuneModule.load_from_checkpoint(best, map_location="cpu", weights="none")
        module.to(pl_module.device)
        transform = eval_transform(datamodule.preprocessing, datamodule.image_size)
        dataset = ImageDataset(samples, transform, datamodule.image_cache)
        # Cached rows only when the backbone never trains in this fit: a run resumed after an
        # unfreeze has no rows of the frozen epochs, and both must score alike (exact resume).
        rows_ok = bool(getattr(pl_module, "backbone_frozen", False))
        logits, labels, source = self._logits(
            module, dataset, datamodule, pl_module.device, rows_ok
        )
        names = list(module.hparams.class_names)
        temperature = fit_temperature(logits, labels) if self.calibrate else 1.0
        record = calibration_record(logits, labels, temperature, self.bins)
        record["logits_from"] = source
        if self.calibrate:
            write_temperature(best, temperature)
        log.info(
            "Temperature scaling on %d validation images: T = %.3f, ECE %.4f -> %.4f, "
            "NLL %.4f -> %.4f",
            len(labels), temperature, record["ece_before"], record["ece_after"],
            record["nll_before"], record["nll_after"],
        )  # fmt: skip
        before = logits.double().softmax(dim=1).numpy()
        probs = (logits.double() / temperature).softmax(dim=1).numpy()
        y = labels.numpy()
        paths = [str(p) for p, _ in samples]
        pairs = confused_pairs(y, probs, names, self.confused_pairs)
        mistakes = {
            "split": "val",
            "num_images": int(len(y)),
            "misclassified": int((probs.argmax(axis=1) != y).sum()),
            "top_losses": top_losses(paths, y, probs, names, self.top_losses),
            "confused_pairs": pairs,
        }
        figures = {
            "reliability": reliability_figure(before, probs, y, record),
            "confused_pairs": confused_pairs_figure(pairs, "Most confused pairs (validation)"),
        }
        if self.top_losses > 0:
            figures["top_losses"] = top_losses_figure(paths, y, probs, names, self.top_losses)[0]
        self._record(trainer, record, mistakes, figures)

    @staticmethod
    def _logits(
        module: FineTuneModule,
        dataset: ImageDataset,
        datamodule: Any,
        device: torch.device,
        rows_ok: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Uncalibrated val logits of `module` and where they came from: the head on the fit's
        cached features when `rows_ok` and `module`'s backbone is the frozen one they were
        computed with (a feature_extraction run: one pass over the images saved), else the
        images."""
        source = getattr(datamodule, "feature_source", None) if rows_ok else None
        rows = source.stored("val", dataset, module.backbone) if source is not None else None
        if rows is None:
            loader = build_loader(dataset, datamodule.batch_size, datamodule.num_workers)
            return (*collect_logits(module, loader, device), "images")
        return (
            *collect_logits(module.head, DataLoader(rows, batch_size=256), device),
            "cached features",
        )

    @staticmethod
    def _record(
        trainer: L.Trainer,
        record: dict[str, Any],
        mistakes: dict[str, Any],
        figures: dict[str, Any],
    ) -> None:
        summary = next((c for c in trainer.callbacks if isinstance(c, RunSummary)), None)
        if summary is not None:
            summary.extra["calibration"] = record
            summary.extra["mistakes"] = mistakes
            if summary.plots:
                plots = summary.path.parent / "plots"
                for name, fig in figures.items():
                    save_png(fig, plots / f"{name}.png")
        tb = RunViews.tensorboard(trainer)
        if tb is None:
            return
        step = trainer.global_step
        for name, fig in figures.items():
            tb.experiment.add_image(f"val/{name}", figure_to_array(fig), step, dataformats="HWC")
        table = confused_pairs_markdown(mistakes["confused_pairs"])
        tb.experiment.add_text("val/confused_pairs", table, step)
        for key in ("temperature", "nll_before", "nll_after", "ece_before", "ece_after"):
            tb.experiment.add_scalar(f"calibration/{key}", record[key], step)
