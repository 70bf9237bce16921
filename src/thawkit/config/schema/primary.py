"""Schemas of the primary configs: train (the groups a run is composed of and its own keys),
predict, evaluate and export (those three check their values where they use them), and audit."""

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from thawkit.config.schema.data import DataSchema
from thawkit.config.schema.model import ModelSchema
from thawkit.config.schema.rules import above, at_least, spec, within
from thawkit.config.schema.training import (
    CallbacksSchema,
    DASchema,
    DistillSchema,
    SchedulerSchema,
    TrainerSchema,
)
from thawkit.config.schema.weight_space import TuneSchema, WeightSpaceSchema


@dataclass
class TrainSchema:
    """`train.yaml`: one node per config group, and the run's own keys."""

    data: DataSchema = field(default_factory=DataSchema)
    model: ModelSchema = field(default_factory=ModelSchema)
    # UnfreezeSchema or AutoSchema: each strategy file names its own (thawkit.config.schema).
    strategy: Any = None
    # L2SPSchema or EWCSchema; null = no pull towards the pretrained weights.
    regularizer: Any = None
    da: DASchema = field(default_factory=DASchema)
    distill: DistillSchema = field(default_factory=DistillSchema)
    # torch.optim classes (their own keywords), built partial.
    optimizer: Any = None
    scheduler: SchedulerSchema = field(default_factory=SchedulerSchema)
    callbacks: CallbacksSchema = field(default_factory=CallbacksSchema)
    logger: Any = None
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    paths: Any = None
    seed: int | None = 0
    # Continue an interrupted run in its own dir, with its own config: resume=outputs/<run>
    # (extra value overrides apply on top, e.g. trainer.max_epochs=20).
    resume: str | None = None
    # Resume from a checkpoint with the config given here: `last` (the run dir's last.ckpt) or
    # a path (outputs/<run>/checkpoints/last.ckpt; the run continues in that run dir).
    ckpt_path: str | None = None
    # What train.py returns to sweepers (Optuna); the checkpoint callback keeps its best.
    optimized_metric: str = "val/acc"
    # After fit, mix the fine-tuned weights with the start's, (1 - a) * start + a * finetuned,
    # and keep the a that validates best (thawkit.run.wiseft; settings in weight_space).
    wiseft: bool = False
    # Stochastic weight averaging over the last epochs (thawkit.transfer.swa).
    swa: bool = False
    weight_space: WeightSpaceSchema = field(default_factory=WeightSpaceSchema)
    tune: TuneSchema = field(default_factory=TuneSchema)


@dataclass
class PredictSchema:
    """`predict.yaml`: python predict.py ckpt=PATH input=IMAGE_OR_FOLDER."""

    ckpt: str = MISSING
    input: str = MISSING
    top_k: int = 3
    # The CSV; null = <run dir>/predictions/<input name>.csv
    output: str | None = None
    batch_size: int = 32
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # Predictions printed (all go to the CSV); -1 = all.
    show: int = 100
    progress: bool = True
    # Test-time augmentation (thawkit.inference.tta): none | flip | five_crop, or a list of views.
    tta: Any = "none"
    # Top probability below this: the row's `label` is `uncertain` (0 = always a class).
    min_confidence: float = 0.0
    # Grad-CAM overlays of the top class, in a folder next to the CSV (thawkit.inference.explain).
    explain: bool = False
    # Replace an existing output (a default output name that is taken gets a number instead).
    overwrite: bool = False


@dataclass
class EvaluateDataSchema:
    """`data` of evaluate.yaml."""

    # null = the image folder the checkpoint was trained on (recorded in it).
    root: str | None = None
    batch_size: int = 32
    num_workers: int = 0
    # Files left out (an audit.json or a text list, as training's data.exclude); auto = the
    # list the checkpoint was trained without, on its own folder; null = none.
    exclude: str | None = "auto"


@dataclass
class EvaluateSchema:
    """`evaluate.yaml`: python evaluate.py ckpt=PATH [data.root=FOLDER] [split=test]."""

    ckpt: str = MISSING
    data: EvaluateDataSchema = field(default_factory=EvaluateDataSchema)
    # auto = test split if there is one, else val (all images of a new flat folder).
    split: str = "auto"  # | train | val | test | all
    # null = <run dir>/eval/<folder>-<split>
    output_dir: str | None = None
    # Images in the top-losses grid (0 = none).
    top_losses: int = 16
    # Test-time augmentation (thawkit.inference.tta): none | flip | five_crop, or a list of views.
    tta: Any = "none"
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True
    # Replace an existing output (a default output name that is taken gets a number instead).
    overwrite: bool = False


@dataclass
class ExportSchema:
    """`export.yaml`: python export.py ckpt=PATH format=onnx|torchscript [output=FILE]."""

    ckpt: str = MISSING
    format: str = "onnx"  # onnx | torchscript
    # null = <run dir>/export/<ckpt name>.onnx (or .torchscript.pt)
    output: str | None = None
    # ONNX opset; null = the exporter's default.
    opset: int | None = None
    # Largest allowed difference of the exported model's logits from PyTorch's.
    atol: float = 1.0e-4
    rtol: float = 1.0e-4
    # int8: also write <name>.int8.onnx (onnxruntime static QDQ; dynamic without images).
    quantize: str | None = None  # null | int8
    # Training images (stratified, seeded draw) that calibrate int8; 0 = dynamic quantization.
    calibration_images: int = 200
    # Folder for calibration and the fp32/int8 comparison; null = the checkpoint's own.
    data_root: str | None = None
    eval_split: str = "val"  # val | test | auto (test if there is one)
    # Largest accuracy drop int8 may cost; above it the file is still written, with a warning.
    max_accuracy_drop: float = 0.01
    seed: int = 0
    # Time PyTorch eager, ONNX fp32 and ONNX int8 into export.json and the log.
    benchmark: bool = False
    bench_batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    bench_runs: int = 20
    bench_warmup: int = 3
    # Intra-op threads for every runtime; null = PyTorch's default.
    bench_threads: int | None = None


@dataclass
class ServeSchema:
    """`serve.yaml`: thawkit serve ckpt=PATH [host=127.0.0.1] [port=8000]."""

    ckpt: str = MISSING
    # 127.0.0.1 = this machine only; 0.0.0.0 = every interface (other machines can reach it).
    host: str = "127.0.0.1"
    port: int = 8000
    top_k: int = 3
    # Larger uploads are refused with 413.
    max_upload_mb: float = 10.0
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class AuditDataSchema:
    """`data` of audit.yaml: the folder, read and split as training reads and splits it."""

    root: str = MISSING
    # null = the backbone's own input size.
    image_size: int | None = spec(None, at_least(1, " (or null for the backbone's own)"))
    batch_size: int = spec(32, at_least(1))
    num_workers: int = spec(0, at_least(0))
    # A flat folder is split as `python train.py` splits it with the same fractions and seed.
    val_fraction: float = DataSchema.val_fraction
    test_fraction: float = DataSchema.test_fraction
    seed: int = 0


@dataclass
class AuditModelSchema:
    """`model` of audit.yaml: the frozen backbone whose pooled features the audit compares."""

    backbone: str = ModelSchema.backbone
    weights: str = ModelSchema.weights


@dataclass
class AuditSchema:
    """`audit.yaml`: python audit.py data.root=FOLDER (thawkit.audit.command)."""

    data: AuditDataSchema = field(default_factory=AuditDataSchema)
    model: AuditModelSchema = field(default_factory=AuditModelSchema)
    # Cosine similarity of pooled features at or above which two images are near-duplicates
    # (measured on the shared photo sets: docs/audit.md).
    near_duplicate_threshold: float = spec(0.95, within(0, 1, "(]"))
    # Folds of the cross-validated linear probe behind the label issues.
    folds: int = spec(5, at_least(2))
    # Modified z-score of the distance to the nearest neighbours above which an image is an
    # outlier; neighbours: the k nearest images.
    outlier_z: float = spec(3.5, above(0))
    outlier_neighbours: int = spec(5, at_least(1))
    # Unusable: shorter side under min_side px, longer/shorter over max_aspect, or pixel
    # standard deviation (0-1 scale) of the model's input under min_contrast.
    min_side: int = spec(32, at_least(1))
    max_aspect: float = spec(4.0, above(1))
    min_contrast: float = spec(0.02, at_least(0))
    # Thumbnails per gallery PNG (0 = no galleries).
    gallery: int = spec(24, at_least(0))
    # Keep the features on disk here: an audit of the same files reads them back.
    feature_cache_dir: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True
