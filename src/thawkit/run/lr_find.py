"""The LR finder (`tune.lr_find=true`): Lightning's `Tuner.lr_find` on the head LR, before fit.

The range test runs on the head alone, over pooled features of the training images from the
frozen backbone (computed once, evaluation transform): that is the LR `model.lr` names, the
head's, and it costs a few seconds instead of a hundred backbone steps. The lower groups keep
their discriminative ratios (`model.lr * model.lr_decay ** depth`): only `model.lr` changes.

Lightning's own suggestion (the steepest point after a fixed skip) is misled by a fresh head's
first noisy steps and by a loss that turns NaN at high LRs, so the suggestion is read here:
the curve is cut at its first non-finite loss, the first `burn_in` points are dropped, a
moving average of `smoothing` points is taken, and the suggestion is the steepest descent of
that curve (against log LR) before its minimum. Too few points: the configured LR stays.

The result goes to `lr_find.json` in the run dir at once (a resumed run reads it back instead
of searching again, so it trains at the same LR), to summary.json (`lr_find`) and to
`plots/lr_find.png`.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from thawkit.atomic import write_json_atomic
from thawkit.data.feature_cache import extract_features
from thawkit.finetune.module import FineTuneModule
from thawkit.reporting.plots import save_png
from thawkit.reporting.summary import RunSummary
from thawkit.reporting.weight_space_plots import lr_find_figure

log = logging.getLogger(__name__)

RECORD = "lr_find.json"


class HeadOnFeatures(L.LightningModule):
    """A copy of the run's head, trained on pooled features (the range test's subject)."""

    def __init__(self, head: nn.Module, lr: float, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.head = copy.deepcopy(head)
        self.lr = lr
        self.label_smoothing = label_smoothing

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.head(x), y, label_smoothing=self.label_smoothing)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.head.parameters(), lr=self.lr)


def suggest(
    lrs: list[float], losses: list[float], burn_in: int = 10, smoothing: int = 5
) -> tuple[float | None, list[float]]:
    """The suggested LR of a range test, and the smoothed curve it was read from (see above)."""
    lr, loss = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    bad = ~np.isfinite(loss)
    end = int(np.argmax(bad)) if bad.any() else len(loss)
    lr, loss = lr[:end], loss[:end]
    smoothed = np.full(len(losses), np.nan)
    if len(loss) < burn_in + max(3, smoothing):
        return None, smoothed.tolist()
    kernel = np.ones(smoothing) / smoothing
    padded = np.pad(loss, (smoothing // 2, smoothing - 1 - smoothing // 2), mode="edge")
    curve = np.convolve(padded, kernel, mode="valid")
    smoothed[:end] = curve
    region = slice(burn_in, burn_in + int(np.argmin(curve[burn_in:])) + 1)
    xs, ys = np.log10(lr[region]), curve[region]
    if len(xs) < 3:  # the minimum is at the start: the lowest LRs after the burn-in
        return float(lr[burn_in]), smoothed.tolist()
    slope = np.gradient(ys, xs)
    return float(lr[region][int(np.argmin(slope))]), smoothed.tolist()


def range_test(
    cfg: DictConfig, model: FineTuneModule, datamodule: Any
) -> tuple[list[float], list[float]]:
    """Lightning's LR range test of the head on frozen features: (lrs, losses)."""
    gpu = torch.cuda.is_available() and cfg.trainer.accelerator != "cpu"
    device = torch.device("cuda" if gpu else "cpu")
    was = model.training
    model.eval().to(device)
    dataset = datamodule.plain_loader("train").dataset
    try:
        features, labels = extract_features(model.backbone, dataset, datamodule.batch_size, device)
    finally:
        model.train(was).cpu()  # the fit moves it where it runs
    loader = DataLoader(
        TensorDataset(features, labels),
        batch_size=datamodule.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(int(cfg.get("seed") or 0)),
    )
    subject = HeadOnFeatures(model.head, float(model.hparams.lr), model.hparams.label_smoothing)
    tune = cfg.tune
    with tempfile.TemporaryDirectory(prefix="thawkit-lr-find-") as tmp:
        trainer = L.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=1,
            max_epochs=10_000,  # the finder stops after num_steps
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp,
        )
        finder = Tuner(trainer).lr_find(
            subject,
            train_dataloaders=loader,
            min_lr=tune.min_lr,
            max_lr=tune.max_lr,
            num_training=tune.num_steps,
            early_stop_threshold=None,  # the suggestion handles divergence (and NaN) itself
            update_attr=False,
        )
    return list(finder.results["lr"]), [float(v) for v in finder.results["loss"]]


def find_head_lr(
    cfg: DictConfig, trainer: L.Trainer, model: FineTuneModule, datamodule: Any, resuming: bool
) -> dict[str, Any]:
    """Set `model.lr` from the range test (or from the run's earlier one when resuming)."""
    run_dir = Path(cfg.paths.output_dir)
    saved = run_dir / RECORD
    if resuming and saved.is_file():
        record = json.loads(saved.read_text())
        log.info("LR finder: resuming at the LR found before, %.3g", record["applied"])
    else:
        lrs, losses = range_test(cfg, model, datamodule)
        suggested, smoothed = suggest(lrs, losses, cfg.tune.burn_in, cfg.tune.smoothing)
        configured = float(model.hparams.lr)
        record = {
            "configured": configured,
            "suggested": suggested,
            "applied": suggested if suggested is not None else configured,
            "lr": lrs,
            "loss": [v if np.isfinite(v) else None for v in losses],
            "smoothed": [v if np.isfinite(v) else None for v in smoothed],
            "burn_in": cfg.tune.burn_in,
            "smoothing": cfg.tune.smoothing,
            "plot": "plots/lr_find.png",
        }
        if suggested is None:
            log.warning(
                "LR finder: too few finite losses for a suggestion; model.lr stays %.3g",
                configured,
            )
        else:
            log.info("LR finder: head LR %.3g (configured %.3g)", suggested, configured)
        if trainer.is_global_zero:
            write_json_atomic(saved, record)
            save_png(lr_find_figure(record), run_dir / "plots" / "lr_find.png")
    model.hparams.lr = float(record["applied"])
    summary = next((c for c in trainer.callbacks if isinstance(c, RunSummary)), None)
    if summary is not None:
        curve = ("lr", "loss", "smoothed")
        summary.extra["lr_find"] = {k: v for k, v in record.items() if k not in curve}
        summary.extra["lr_find"]["curve"] = RECORD
    return record
