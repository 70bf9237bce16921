"""Schemas of the groups around the model: scheduler, regularizer, da, speed, the callbacks
(EMA among them) and the Lightning Trainer keys thawkit uses."""

from dataclasses import dataclass, field
from typing import Any

from omegaconf import SI

from thawkit.config.schema.rules import (
    Rule,
    above,
    at_least,
    one_of,
    spec,
    within,
)

SCHEDULES = ("cosine", "step", "plateau", "onecycle", "cosine_restarts", "constant")
DA_METHODS = ("none", "dann", "mmd")
MMD_ESTIMATORS = ("biased", "unbiased")


@dataclass
class SchedulerSchema:
    """`scheduler`: thawkit.finetune.lr_schedule.FineTuneLR (built partial: the module gives it
    the optimizer and the step counts)."""

    _target_: str = "thawkit.finetune.lr_schedule.FineTuneLR"
    _partial_: bool = True
    name: str = spec("cosine", one_of(SCHEDULES))
    warmup_epochs: float = spec(1.0, at_least(0))
    # The same in steps; wins over warmup_epochs when set.
    warmup_steps: int | None = spec(None, at_least(0))
    # LR of a group unfrozen mid-run ramps up again from 0 over this many epochs.
    rewarm_epochs: float = spec(0.5, at_least(0))
    min_lr_ratio: float = spec(0.01, within(0, 1, "[]"))
    step_epochs: float = spec(3.0, above(0))
    gamma: float = spec(0.1, within(0, 1, "(]"))
    restart_epochs: float = spec(3.0, above(0))
    plateau_patience: int = spec(2, at_least(0))
    plateau_factor: float = spec(0.1, within(0, 1, "()"))
    pct_start: float = spec(0.3, within(0, 1, "()"))


@dataclass
class L2SPSchema:
    """`regularizer=l2sp`: thawkit.transfer.regularize.L2SP."""

    _target_: str = "thawkit.transfer.regularize.L2SP"
    strength: float = spec(0.1, at_least(0))
    # Keep the optimizer's weight decay on the backbone too (off: L2-SP replaces it there).
    backbone_weight_decay: bool = False


@dataclass
class EWCSchema(L2SPSchema):
    """`regularizer=ewc`: thawkit.transfer.regularize.EWC."""

    _target_: str = "thawkit.transfer.regularize.EWC"
    fisher_batches: int = spec(8, at_least(1))
    # F / mean(F): strength then means what it means for L2-SP.
    normalize: bool = True
    seed: int = 0


@dataclass
class DASchema:
    """`da`: thawkit.transfer.domain.DomainAdaptation."""

    _target_: str = "thawkit.transfer.domain.DomainAdaptation"
    method: str = spec("none", one_of(DA_METHODS))
    # Folder of unlabelled target-domain images (nested folders allowed): dann and mmd.
    target_root: str | None = None
    # Folder of labelled target images, <class>/ folders named as the training classes.
    target_val_root: str | None = None
    # Multiplier of the domain loss in the total loss.
    weight: float = spec(1.0, at_least(0))
    # Domain loss (mmd) or reversed gradient (dann) scaled by 2 / (1 + exp(-gamma p)) - 1.
    ramp: bool = True
    gamma: float = spec(10.0, above(0))
    # dann: the domain classifier's hidden widths and dropout.
    hidden: list[int] = spec([256])
    dropout: float = spec(0.0, within(0, 1, "[)"))
    # mmd: kernel_num Gaussian kernels, bandwidths mean distance^2 * kernel_mul^k.
    kernel_mul: float = spec(2.0, above(0))
    kernel_num: int = spec(5, at_least(1))
    estimator: str = spec("biased", one_of(MMD_ESTIMATORS))


@dataclass
class DistillSchema:
    """`distill`: knowledge distillation from a trained thawkit checkpoint
    (thawkit.inference.teacher.build_distillation; null teacher = off)."""

    _target_: str = "thawkit.inference.teacher.build_distillation"
    # A thawkit checkpoint trained on the same classes (<run>/checkpoints/best.ckpt).
    teacher: str | None = None
    # Share of the teacher term in the loss: (1 - weight) * CE + weight * T^2 * KL.
    weight: float = spec(0.5, within(0, 1, "[]"))
    temperature: float = spec(4.0, above(0))


@dataclass
class SpeedSchema:
    """`callbacks.speed` (the `speed` group): thawkit.run.speed.SpeedOptions."""

    _target_: str = "thawkit.run.speed.SpeedOptions"
    # Head-only epochs train the head on pooled features computed once; with augmentation,
    # feature_views augmented views per image are cached (0 = run the backbone every epoch).
    feature_cache: bool = True
    feature_views: int = spec(1, at_least(0))
    feature_cache_dir: str | None = None
    # Cached features held in memory; a split beyond it is written to a file in the run dir and
    # read from there (thawkit.data.feature_store): same training, bounded memory.
    feature_cache_mb: float = spec(512.0, at_least(0, " (0 = every split from a file)"))
    # Decoded images held as uint8 in memory, resized once; beyond it they decode on the fly.
    image_cache_mb: float = spec(1024.0, at_least(0, " (0 = off)"))
    image_short_side: int | None = spec(None, at_least(1))
    # Scan verdicts, decoded images and features kept on disk for later runs (thawkit cache).
    persistent_cache: bool = True
    persistent_cache_mb: float = spec(4096.0, at_least(0))
    persistent_cache_dir: str | None = None
    channels_last: bool = True
    compile: bool = False
    threads: int | None = spec(None, at_least(1, " (or null for PyTorch's)"))


@dataclass
class EMASchema:
    """`callbacks.ema` (`ema=on`): thawkit.transfer.ema.EMA of the weights."""

    _target_: str = "thawkit.transfer.ema.EMA"
    # Per optimizer step (0.999 ~ the last 1000 steps).
    decay: float = spec(0.999, Rule(lambda v: 0 < v < 1, "(0, 1), e.g. 0.999"))
    # Warm the decay up over the first updates: min(decay, (1 + n) / (10 + n)).
    warmup: bool = True


@dataclass
class ViewsSchema:
    """`callbacks.views`: thawkit.reporting.tensorboard.RunViews (TensorBoard's figures)."""

    _target_: str = "thawkit.reporting.tensorboard.RunViews"
    # Training images shown (augmented and mixed) in TensorBoard's data/train_samples.
    samples: int = spec(16, at_least(0))
    confusion_every_n_epochs: int = spec(1, at_least(1))
    per_class_recall: bool = True
    max_classes_recall: int = spec(50, at_least(1))


@dataclass
class ValReportSchema:
    """`callbacks.val_report`: thawkit.reporting.val_report.ValidationReport (after fit)."""

    _target_: str = "thawkit.reporting.val_report.ValidationReport"
    # Fit temperature scaling on the validation split and store T in best.ckpt.
    calibrate: bool = True
    bins: int = spec(15, at_least(2))
    top_losses: int = spec(16, at_least(0))
    confused_pairs: int = spec(10, at_least(0))


@dataclass
class CallbacksSchema:
    """`callbacks`: every callback built from the config (null = off)."""

    model_checkpoint: Any = None
    last_checkpoint: Any = None
    early_stopping: Any = None
    progress_bar: Any = None
    views: ViewsSchema | None = field(default_factory=ViewsSchema)
    speed: SpeedSchema | None = field(default_factory=SpeedSchema)
    # Off by default; `ema=on` turns it on.
    ema: EMASchema | None = None
    # Temperature scaling, reliability diagram, top losses and confused pairs after fit.
    val_report: ValReportSchema | None = field(default_factory=ValReportSchema)


# Keys of Lightning's own callbacks (no schema of thawkit's) with a rule.
CALLBACK_RULES = {"callbacks.early_stopping.patience": at_least(0)}


@dataclass
class TrainerSchema:
    """`trainer`: the lightning.Trainer keys thawkit's configs use (any other with `+`)."""

    _target_: str = "lightning.Trainer"
    default_root_dir: str | None = SI("${paths.output_dir}")
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = spec(1, at_least(1))
    strategy: Any = "auto"
    max_epochs: int | None = spec(10, Rule(lambda v: v >= 1 or v == -1, ">= 1 (or -1: no limit)"))
    precision: Any = "32-true"
    gradient_clip_val: float | None = spec(None, at_least(0))
    log_every_n_steps: int = spec(10, at_least(1))
    deterministic: Any = False
    enable_model_summary: bool = False
    # null = Lightning's choice (on); false for notebooks, tests and logs.
    enable_progress_bar: bool | None = None
    fast_dev_run: Any = False
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    overfit_batches: Any = 0.0
    plugins: Any = None
