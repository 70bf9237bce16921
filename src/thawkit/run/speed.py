"""SpeedOptions: the `speed` config group as one callback (caches, memory format, compile, threads).

Every option here was measured on a 2-core CPU machine (docs/benchmarks.md) and is on by default
only where it won there:

| option            | default | what it does                                                     |
|-------------------|---------|------------------------------------------------------------------|
| feature_cache     | on      | head-only epochs train the head on pooled features computed once |
| feature_views     | 1       | augmented views cached per image when augmentation is on         |
| feature_cache_mb  | 512     | features held in memory; beyond it they are read from a file     |
| image_cache_mb    | 1024    | decode + resize every image once, keep uint8 pixels in memory    |
| persistent_cache  | on      | scan verdicts, decoded images, features kept on disk across runs |
| channels_last     | on      | NHWC memory format for the convolutions (oneDNN / cuDNN)         |
| compile           | off     | `torch.compile` the backbone                                     |
| threads           | null    | torch threads of the training process (null = PyTorch's choice)  |

Mixed precision is Lightning's: `trainer.precision=bf16-mixed`.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

from thawkit.config.schema import SpeedSchema, check_args
from thawkit.data.disk_cache import DiskCache
from thawkit.data.feature_cache import FeatureCache
from thawkit.data.image_cache import ImageCache
from thawkit.data.transforms import eval_resize

log = logging.getLogger(__name__)


class SpeedOptions(L.Callback):
    """Wires the speed options into a fit: image cache, feature cache, memory format, compile.

    Args:
        feature_cache: train the head on cached pooled features while the backbone is frozen
            (see `thawkit.data.feature_cache`).
        feature_views: augmented views cached per training image when augmentation is on;
            0 = no feature caching while augmenting.
        feature_cache_dir: also keep features on disk here, reused by later runs whose cache
            key matches (same backbone, weights, transforms, files); None = memory only.
        feature_cache_mb: memory budget of the cached features; a split beyond it is written
            to a file in the run dir and read from there (`thawkit.data.feature_store`).
        image_cache_mb: memory budget of the decoded-image cache; 0 = decode every time.
        image_short_side: shorter side the cache stores; None = the evaluation resize
            (`thawkit.data.transforms.eval_resize`).
        persistent_cache: keep the bad-image scan's verdicts, the decoded images and the
            features on disk, reused by later runs on the same files (`thawkit.data.disk_cache`).
        persistent_cache_mb: size cap of the persistent cache (least recently used go first).
        persistent_cache_dir: where it is; None = `$THAWKIT_CACHE` or ~/.cache/thawkit/cache.
        channels_last: convert the model to the channels-last memory format.
        compile: compile the backbone with `torch.compile` (a one-off cost per run).
        threads: torch intra-op threads in the training process; None = leave PyTorch's.
    """

    def __init__(
        self,
        feature_cache: bool = SpeedSchema.feature_cache,
        feature_views: int = SpeedSchema.feature_views,
        feature_cache_dir: str | None = SpeedSchema.feature_cache_dir,
        feature_cache_mb: float = SpeedSchema.feature_cache_mb,
        image_cache_mb: float = SpeedSchema.image_cache_mb,
        image_short_side: int | None = SpeedSchema.image_short_side,
        persistent_cache: bool = SpeedSchema.persistent_cache,
        persistent_cache_mb: float = SpeedSchema.persistent_cache_mb,
        persistent_cache_dir: str | None = SpeedSchema.persistent_cache_dir,
        channels_last: bool = SpeedSchema.channels_last,
        compile: bool = SpeedSchema.compile,
        threads: int | None = SpeedSchema.threads,
    ) -> None:
        # The ranges are the schema's (thawkit.config.schema.SpeedSchema).
        check_args(
            SpeedSchema,
            "callbacks.speed",
            feature_views=feature_views,
            feature_cache_mb=feature_cache_mb,
            image_cache_mb=image_cache_mb,
            image_short_side=image_short_side,
            persistent_cache_mb=persistent_cache_mb,
            threads=threads,
        )
        self.features = (
            FeatureCache(feature_views, feature_cache_dir, budget_mb=feature_cache_mb)
            if feature_cache
            else None
        )
        self.image_cache_mb = image_cache_mb
        self.image_short_side = image_short_side
        self.persistent_cache = persistent_cache
        self.persistent_cache_mb = persistent_cache_mb
        self.persistent_cache_dir = persistent_cache_dir
        self.disk: DiskCache | None = None
        self.channels_last = channels_last
        self.compile = compile
        self.threads = threads
        self._compiled = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "image_cache"):
            self._disk(datamodule)
            self._image_cache(datamodule)
            if stage == "fit" and self.features is not None:
                self.features.disk = self.disk
                self.features.attach(trainer, pl_module, datamodule)
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        if self.compile and not self._compiled:
            pl_module.backbone.model.compile()
            self._compiled = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.features is not None:
            self.features.detach()
        if self.disk is not None and self.disk.stats["features"]["written"]:
            self.disk.trim()

    def _disk(self, datamodule: Any) -> None:
        """The persistent cache: the data module's (its scan used it), else one of our own."""
        if not self.persistent_cache:
            self.disk = None
        elif getattr(datamodule, "disk_cache", None) is not None:
            self.disk = datamodule.disk_cache
        elif self.disk is None:
            self.disk = DiskCache(self.persistent_cache_dir, self.persistent_cache_mb)

    def _image_cache(self, datamodule: Any) -> None:
        if self.image_cache_mb <= 0 or datamodule.image_cache is not None:
            return
        pre = datamodule.preprocessing
        side = self.image_short_side or eval_resize(datamodule.image_size, pre.crop_pct)
        cache = ImageCache(side, self.image_cache_mb, pre.interpolation, disk=self.disk)
        # Training images first: they are read every epoch.
        order = ["train"] + [s for s in datamodule.splits if s != "train"]
        cache.fill([p for split in order for p, _ in datamodule.splits.get(split, [])])
        datamodule.image_cache = cache
        if self.disk is not None and self.disk.stats["images"]["written"]:
            self.disk.trim()
