"""The weight-space steps after fit: SWA's BatchNorm update, WiSE-FT, and their checkpoints.

`after_fit` runs between `trainer.fit` and `trainer.test` (thawkit.run.train). With `swa=true`
the module holds the average of the last epochs (thawkit.transfer.swa); the BatchNorm layers
that train get statistics of the averaged weights, computed on training images, and the
model is written as `checkpoints/swa.ckpt`. With `wiseft=true` the fine-tuned model (the SWA
model, or the best checkpoint) is mixed with its start (thawkit.run.wiseft) and the chosen mix
is written as `checkpoints/wiseft.ckpt`. The last one written is the run's model: summary.json's
`checkpoint`, what the test split measures, and what the result block tells predict and export
to load. Each step records itself in summary.json (`swa`, `wiseft`) and WiSE-FT draws
`plots/wiseft.png`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from thawkit.finetune.module import FineTuneModule
from thawkit.reporting.plots import save_png
from thawkit.reporting.summary import RunSummary
from thawkit.reporting.val_report import ValidationReport
from thawkit.reporting.weight_space_plots import wiseft_figure
from thawkit.run import wiseft
from thawkit.transfer.swa import SWA
from thawkit.transfer.weight_space import State, batch_norms, evaluate_loader, recalibrate_bn
from thawkit.transfer.wiseft import WiseFTStart

log = logging.getLogger(__name__)

# Entries of a training checkpoint that a model made after fit does not have (no resume).
_TRAINING_ONLY = ("current_model_state", "averaging_state")


def write_checkpoint(template: str | os.PathLike, state: State, path: str | os.PathLike) -> Path:
    """A thawkit checkpoint at `path`: `template`'s, with `state` as its weights.

    The hyperparameters and the `thawkit` record (preprocessing, image size, split) are the
    template's, so predict, evaluate and export load it as any checkpoint of the run. Written
    to a temporary file and renamed: whole or absent.
    """
    ckpt = torch.load(template, map_location="cpu", weights_only=True)
    for key in _TRAINING_ONLY:
        ckpt.pop(key, None)
    ckpt["state_dict"] = {k: v.detach().cpu() for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def _callback(trainer: L.Trainer, kind: type) -> Any:
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


def finish_swa(model: FineTuneModule, datamodule: Any, swa: SWA, bn_images: int) -> dict[str, Any]:
    """Recompute the training BatchNorm layers' statistics for the averaged weights."""
    model.train()  # the policy's modes: the norms in train mode are those whose stats train
    norms = [n for n, m in batch_norms(model).items() if m.training]
    images = recalibrate_bn(model, datamodule.plain_loader("train"), norms, bn_images)
    scores = evaluate_loader(model, datamodule.plain_loader("val"))
    log.info(
        "SWA: BatchNorm statistics recomputed on %d images; val/acc %.4f", images, scores["acc"]
    )
    return {
        "start_epoch": swa.start_epoch,
        "bn_recalibrated_layers": len(norms),
        "bn_images": images,
        "val/acc": scores["acc"],
        "val/loss": scores["loss"],
    }


def after_fit(
    cfg: DictConfig, trainer: L.Trainer, model: FineTuneModule, datamodule: Any
) -> str | None:
    """Run SWA's and WiSE-FT's steps after fit; returns the checkpoint that is the run's model
    (None: the best checkpoint stays the run's model)."""
    if not (cfg.get("swa") or cfg.get("wiseft")) or trainer.interrupted:
        return None
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or ""
    if not best:
        return None
    summary: RunSummary | None = _callback(trainer, RunSummary)
    settings = cfg.weight_space
    run_dir = Path(cfg.paths.output_dir)
    result: Path | None = None
    finetuned: State | None = None
    swa: SWA | None = _callback(trainer, SWA)
    if swa is not None and not swa.averaged_at_end and summary is not None:
        # Stopped (early stopping) before averaging started: the best checkpoint stays.
        summary.extra["swa"] = {"start_epoch": swa.start_epoch, "averaged_steps": 0}
    if swa is not None and swa.averaged_at_end:
        record = finish_swa(model, datamodule, swa, settings.bn_images)
        record["averaged_steps"] = swa.averaged_at_end
        result = run_dir / "checkpoints" / "swa.ckpt"
        if trainer.is_global_zero:
            write_checkpoint(best, model.state_dict(), result)
        record["checkpoint"] = "checkpoints/swa.ckpt"
        finetuned = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if summary is not None:
            summary.extra["swa"] = record
    start: WiseFTStart | None = _callback(trainer, WiseFTStart)
    if start is not None:
        if finetuned is None:
            finetuned = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        seed = int(cfg.get("seed") or 0)
        state, record = wiseft.search(model, datamodule, start, finetuned, settings, seed)
        result = run_dir / "checkpoints" / "wiseft.ckpt"
        if trainer.is_global_zero:
            write_checkpoint(best, state, result)
            save_png(wiseft_figure(record), run_dir / "plots" / "wiseft.png")
        record["checkpoint"] = "checkpoints/wiseft.ckpt"
        record["plot"] = "plots/wiseft.png"
        if summary is not None:
            summary.extra["wiseft"] = record
    report: ValidationReport | None = _callback(trainer, ValidationReport)
    if result is not None and report is not None and trainer.is_global_zero:
        # The run's model is now this file: its temperature and mistakes replace best.ckpt's.
        report.report(trainer, model, str(result))
    trainer.strategy.barrier("weight_space")  # every rank tests the file rank 0 wrote
    if result is not None and summary is not None:
        summary.checkpoint = os.path.relpath(result, run_dir)
        summary.write(trainer, model, plots=[])
    return str(result) if result is not None else None


def weight_space_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks `swa=true` and `wiseft=true` add to a fit (before the strategy's)."""
    callbacks: list[L.Callback] = []
    if cfg.get("wiseft"):
        callbacks.append(WiseFTStart())
    if cfg.get("swa"):
        callbacks.append(SWA(start=cfg.weight_space.swa_start))
    return callbacks
