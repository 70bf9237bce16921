"""Training: one config group, one object; compose them and fit.

`thawkit.run.entry` is the Hydra entry (`python train.py`, `thawkit train`) and calls `train`
through `thawkit.run.job`. The run's lifecycle:
validate the config (`thawkit.config.checks`) before any data is read; resolve a resume and guard
the run dir (`thawkit.run.rundir`); fit with the guarantees of `thawkit.run.lifecycle` (graceful
Ctrl-C/SIGTERM, divergence stop, atomic checkpoints) and `thawkit.seeding` (exact resume).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from omegaconf import DictConfig, OmegaConf

from thawkit.config.checks import validate
from thawkit.data import ImageFolderDataModule
from thawkit.data.disk_cache import open_cache
from thawkit.finetune.auto import resolve_auto
from thawkit.finetune.ddp import check_strategy
from thawkit.finetune.module import FineTuneModule
from thawkit.inference.teacher import build_distillation
from thawkit.models.backbone import resolve_preprocessing
from thawkit.reporting.summary import RunSummary, write_setup_failure
from thawkit.reporting.tracker_records import TrackerRecords
from thawkit.reporting.trackers import build_loggers, finish_runs, log_config
from thawkit.run.lifecycle import AtomicCheckpointIO, RunGuard
from thawkit.run.lr_find import find_head_lr
from thawkit.run.preflight import preflight
from thawkit.run.rundir import RunDirError, check_checkpoint_fits, prepare_run_dir
from thawkit.run.weight_space import after_fit, weight_space_callbacks
from thawkit.seeding import StepSeeds, resolve_seed
from thawkit.transfer.domain import DomainAdaptation

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[ImageFolderDataModule, FineTuneModule, L.Trainer]:
    """Instantiate data, model, callbacks, logger and trainer from a composed config."""
    validate(cfg)  # every config error, before any data is read
    preflight(cfg)  # weights file, writable run dir: before the image scan
    seed = resolve_seed(cfg.get("seed"))
    if cfg.get("seed") is not None:
        L.seed_everything(seed, workers=True)
    preprocessing = resolve_preprocessing(cfg.model.backbone)
    # Domain adaptation (src/thawkit/conf/da): the target folders go to the data, the loss to the
    # model.
    da: DomainAdaptation | None = instantiate(cfg.da) if cfg.get("da") else None
    targets = {"target_root": da.target_root if da and da.enabled else None,
               "target_val_root": da.target_val_root if da else None}  # fmt: skip
    datamodule: ImageFolderDataModule = instantiate(
        cfg.data, preprocessing=preprocessing, **targets
    )
    datamodule.disk_cache = open_cache(cfg.callbacks.get("speed"))  # before the image scan
    datamodule.prepare_data()
    datamodule.setup("fit")
    # strategy=auto: decide now, before the model; what it wrote passes the same checks.
    auto_choice = resolve_auto(cfg, datamodule, check=validate)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    reset_head = bool(model_cfg.pop("reset_head", False))
    model: FineTuneModule = instantiate(
        model_cfg,
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        class_weights=datamodule.class_weights,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
        domain_adaptation=da,
    )
    init_head_from_checkpoint(model, str(cfg.model.weights), reset_head)
    summary = RunSummary(
        output_dir=cfg.paths.output_dir,
        strategy=cfg.strategy.name,
        seed=cfg.get("seed"),
        monitor=cfg.callbacks.model_checkpoint.monitor,
        mode=cfg.callbacks.model_checkpoint.mode,
        extra={
            "class_counts": datamodule.class_counts,
            "skipped_files": datamodule.skipped_files,
            "excluded_files": datamodule.excluded_files,
            "classes_without_images": datamodule.classes_without_images,
            "image_size": datamodule.image_size,
            "da": da.method if da else "none",
        },
    )
    if auto_choice is not None:
        summary.extra["auto"] = auto_choice
    # callbacks.ema among them (ema=on): validation, checkpoints and the result use its weights.
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    # WiSE-FT's start and SWA (thawkit.run.weight_space); before the strategy's callback.
    callbacks += weight_space_callbacks(cfg)
    callbacks += [
        instantiate(cfg.strategy),
        summary,
        TrackerRecords(),  # after summary: hands the loggers summary.json and plots/
        RunGuard(cfg.paths.output_dir),
        StepSeeds(seed),
    ]
    if cfg.get("regularizer"):  # L2-SP / EWC (thawkit.transfer.regularize)
        callbacks.append(instantiate(cfg.regularizer))
    if OmegaConf.select(cfg, "distill.teacher"):  # distillation (thawkit.inference.teacher)
        # Called, not instantiated: Hydra would wrap a TeacherError in its own exception.
        distill_args = OmegaConf.to_container(cfg.distill, resolve=True)
        distill_args.pop("_target_", None)
        distill = build_distillation(class_names=datamodule.class_names, **distill_args)
        callbacks.append(distill)
        summary.extra["distill"] = distill.record
    logger = build_loggers(cfg) or False  # thawkit.reporting.trackers: one per `logger` node
    plugins = list(instantiate(cfg.trainer.get("plugins")) or [])
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())  # a checkpoint on disk is whole or absent
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=logger, plugins=plugins
    )
    check_strategy(trainer.strategy)  # plain DDP would desynchronise groups unfrozen later
    return datamodule, model, trainer


def init_head_from_checkpoint(model: FineTuneModule, weights: str, reset_head: bool) -> None:
    """Fine-tuning again from a thawkit checkpoint (`model.weights=<run>/checkpoints/best.ckpt`).

    The backbone comes from the checkpoint (thawkit.models.weights); the head too when the
    checkpoint
    was trained on the same classes. On other classes this is an error, unless
    `model.reset_head=true`: then the head starts fresh, with a warning.
    """
    path = Path(weights).expanduser()
    if path.suffix != ".ckpt" or not path.is_file():
        return
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    hp = ckpt.get("hyper_parameters", {})
    head = {
        k[len("head.") :]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("head.")
    }
    names, mine = list(hp.get("class_names") or []), list(model.hparams.class_names)
    if names == mine and head:
        model.head.load_state_dict(head)
        log.info("Fine-tuning %s again: backbone and head from the checkpoint", path)
        return
    what = (
        f"{path} was trained on {len(names)} classes {names[:10]}; "
        f"the data has {len(mine)} {mine[:10]}"
    )
    if not reset_head:
        raise ValueError(
            f"{what}. Its head cannot predict these classes: set model.reset_head=true to start "
            "a new head on the checkpoint's backbone."
        )
    log.warning("%s: model.reset_head=true, so the head starts fresh (backbone kept).", what)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and test when there is a test split); returns the final metrics.

    Raises:
        thawkit.reporting.status.RunInterrupted: on Ctrl-C/SIGTERM, after saving last.ckpt.
        thawkit.finetune.loss_guard.NonFiniteLossError: when the loss diverged (nothing saved after
        it).
        thawkit.run.rundir.RunDirError: nothing to resume, or the run dir holds another run.
    """
    try:
        validate(cfg)
        cfg = prepare_run_dir(cfg)
        datamodule, model, trainer = build(cfg)
    except RunDirError:
        raise  # the dir is another run's: nothing is written into it
    except Exception as e:  # config, data or model: the run dir still says why
        write_setup_failure(cfg.paths.output_dir, e)
        raise
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        check_checkpoint_fits(
            ckpt_path, datamodule.num_classes, datamodule.class_names, model.hparams.backbone
        )
        log.info("Resuming from %s", ckpt_path)
    log_config(trainer.loggers, cfg)  # the composed config, as every logger's hyperparameters
    if cfg.tune.lr_find:  # the head LR, before training (thawkit.run.lr_find)
        find_head_lr(cfg, trainer, model, datamodule, resuming=bool(ckpt_path))
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    # SWA's BatchNorm update and WiSE-FT: a new checkpoint becomes the run's model.
    made = after_fit(cfg, trainer, model, datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # The best value of the monitored metric (what the kept checkpoint scored), for sweepers.
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        metrics[f"{ckpt_cb.monitor}_best"] = float(ckpt_cb.best_model_score)
    if datamodule.has_test() and not trainer.fast_dev_run:
        # The kept checkpoint by path: "best" would make Lightning warn that there are two
        # ModelCheckpoint callbacks (best and last), then pick this same first one.
        ckpt = (ckpt_cb.best_model_path or None) if ckpt_cb is not None else None
        ckpt = made or ckpt
        for results in trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False):
            metrics.update(results)
    finish_runs(trainer.loggers)  # W&B's run stays open until the process ends otherwise
    return metrics
