"""The training entry: one config group, one object; compose them and fit.

`train.py` at the project root is the Hydra entry point and calls `main`.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from thawkit import job
from thawkit.backbone import resolve_preprocessing
from thawkit.data import ImageFolderDataModule
from thawkit.ddp import check_strategy
from thawkit.module import FineTuneModule
from thawkit.summary import RunSummary

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[ImageFolderDataModule, FineTuneModule, L.Trainer]:
    """Instantiate data, model, callbacks, logger and trainer from a composed config."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    preprocessing = resolve_preprocessing(cfg.model.backbone)
    datamodule: ImageFolderDataModule = instantiate(cfg.data, preprocessing=preprocessing)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model: FineTuneModule = instantiate(
        cfg.model,
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        class_weights=datamodule.class_weights,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
    )
    summary = RunSummary(
        output_dir=cfg.paths.output_dir,
        strategy=cfg.strategy.name,
        seed=cfg.get("seed"),
        monitor=cfg.callbacks.model_checkpoint.monitor,
        mode=cfg.callbacks.model_checkpoint.mode,
        extra={
            "class_counts": datamodule.class_counts,
            "skipped_files": datamodule.skipped_files,
            "image_size": datamodule.image_size,
        },
    )
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    callbacks += [instantiate(cfg.strategy), summary]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    check_strategy(trainer.strategy)  # plain DDP would desynchronise groups unfrozen later
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and test when there is a test split); returns the final metrics."""
    datamodule, model, trainer = build(cfg)
    if trainer.logger is not None:
        run_keys = [k for k in cfg if k != "hydra"]
        params = OmegaConf.to_container(OmegaConf.masked_copy(cfg, run_keys), resolve=True)
        trainer.logger.log_hyperparams(params)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # The best value of the monitored metric (what the kept checkpoint scored), for sweepers.
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        metrics[f"{ckpt_cb.monitor}_best"] = float(ckpt_cb.best_model_score)
    if datamodule.has_test() and not trainer.fast_dev_run:
        ckpt = "best" if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path else None
        for results in trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False):
            metrics.update(results)
    return metrics


def main(cfg: DictConfig) -> float | None:
    """Run one training job; return the optimised metric (its best value) for Hydra sweepers.

    `thawkit.job.run` records how the job ended (`result.json`), keeps a multirun going past a
    failed job, and moves a multirun job that uses DDP into its own process.
    """
    return job.run(cfg, train)
