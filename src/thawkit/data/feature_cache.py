"""Pooled-feature cache: in head-only epochs the frozen backbone runs once, the head trains on it.

When every backbone group is frozen and the BatchNorm policy keeps their statistics fixed, the
backbone is a fixed function: its training forward equals its evaluation forward, so its pooled
features can be computed once (eval mode, `torch.no_grad`) and the head trained on them. That is
the head-only phase of `feature_extraction`, `two_phase`, `gradual` and a linear probe.

How it plugs into Lightning: the data module's train and val loaders are wrapped in a
`SwitchingLoader`, which decides at the start of every epoch (when Lightning iterates it) whether
the epoch sees images or cached features (the module's frozen state at the epoch's first
batch). Both sources draw from the same sampler with the same
batch size, so the epoch has the same batches in the same order either way, and the scheduler's
step count never changes. A batch of features is (B x num_features), which
`FineTuneModule.forward` sends to the head alone.

What is trained never changes silently:
- No augmentation: features of the evaluation transform, computed once.
- Augmentation on: `views` augmented views per training image are cached; epoch e trains on view
  e mod `views` (each view is computed when first needed, so with `views` >= the head-only epochs
  every epoch sees fresh augmentations, as without the cache). `views=0` turns caching off
  whenever augmentation is on. An info line says which.
- Caching stays off, with an info line naming the reason, when: Mixup/CutMix is active that epoch
  (mixing features is not mixing images), `bn_policy=none` (frozen groups would update their
  statistics), the backbone's training forward differs from its evaluation forward (dropout or
  stochastic depth in the backbone: checked on the first batch), several processes train (DDP),
  domain adaptation is on (its loss needs features computed with gradients,
  `thawkit.transfer.domain`), or, for the training split, a teacher distils into the run (it
  runs on every training batch's images, `thawkit.transfer.distill`).

Features are looked up by a cache key over everything that determines them (backbone name,
weights source, a digest of every parameter and buffer, the transform, the image source, the
files' paths, labels, sizes and mtimes, the view and its seed, precision and memory format); a
change in any of them means new features, never stale ones. The store lives in memory for the
run up to a budget (`callbacks.speed.feature_cache_mb`; beyond it a split's features are written
to a file in the run dir as they are extracted, and read from it), and optionally on disk
(`directory`) across runs. With the persistent cache (`disk`,
`thawkit.data.disk_cache`, on by default) the features are also kept as one row per file: a
later run (the next job of a sweep) extracts only the files that are new or changed. So that a
row never depends on which other files were extracted with it, each augmented image draws its
augmentation from its own seed (the view's seed and its path).

Here: the decisions. The keys and the store are in `thawkit.data.feature_store`, the extraction
and the rows on disk in `thawkit.data.feature_rows`, the switching loader in
`thawkit.data.feature_loader`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from thawkit.data.disk_cache import DiskCache, file_identity
from thawkit.data.feature_loader import SwitchingLoader, loader_like
from thawkit.data.feature_rows import (
    ViewItems,
    extract_features,
    feature_batches,
    in_dataset_order,
    load_rows,
    save_rows,
)
from thawkit.data.feature_store import (
    FeatureStore,
    cache_key,
    files_digest,
    is_random,
    module_digest,
    rows_tensor,
)

__all__ = ["FeatureCache", "extract_features"]

log = logging.getLogger(__name__)

# A training forward that differs from the evaluation forward by more than this is not frozen.
_FORWARD_TOLERANCE = 1e-5


# ----------------------------------------------------------------- the decisions
class FeatureCache:
    """Decides, epoch by epoch, whether the head trains on cached features, and computes them.

    Attach it to a fit with `attach(trainer, module, datamodule)` (`thawkit.run.speed.SpeedOptions`
    does this); the data module then wraps its loaders with `wrap`.

    Args:
        views: augmented views cached per training image when the training transform is random;
            0 = no caching while augmentation is on.
        directory: also keep features on disk here (reused across runs by cache key).
        batch_size: batch size of the extraction pass (evaluation mode, no gradients); None =
            the data module's (larger batches were slower on a 2-core CPU: 10-11 ms/image at 64
            against 7-8 at 32, EfficientNet-Lite0 at 160 px).
        budget_mb: memory the cached features may take; a split beyond it is written to a file
            in the run dir and read from there (`thawkit.data.feature_store`). None = no limit.
    """

    def __init__(
        self,
        views: int = 1,
        directory: str | None = None,
        batch_size: int | None = None,
        budget_mb: float | None = None,
    ) -> None:
        if views < 0:
            raise ValueError(
                f"callbacks.speed.feature_views={views} must be >= 0 (0 = off with augmentation)"
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"feature cache batch_size={batch_size} must be >= 1")
        self.views = views
        self.batch_size = batch_size
        self.store = FeatureStore(directory, budget_mb)
        self.disk: DiskCache | None = None  # the persistent cache (thawkit.run.speed sets it)
        self.num_reused = 0  # feature rows read back from the persistent cache
        self.trainer: Any = None
        self.module: Any = None
        self.datamodule: Any = None
        self.extractions: list[dict[str, Any]] = []
        self.extract_time_s = 0.0
        self._off_reason: str | None = None
        self._said: set[str] = set()
        self._forward_checked = False

    # ------------------------------------------------------------- wiring
    def attach(self, trainer: Any, module: Any, datamodule: Any) -> None:
        """Serve `datamodule`'s train/val loaders for `module` during `trainer`'s fit."""
        from thawkit.models import batchnorm

        self.trainer, self.module, self.datamodule = trainer, module, datamodule
        # Spilled features go to the run dir (removed again when the fit ends).
        self.store.spill_root = getattr(trainer, "default_root_dir", None)
        self._off_reason = None
        self._forward_checked = False
        if trainer.world_size > 1:
            # Not attached at all: Lightning shards only real DataLoaders (DistributedSampler),
            # so the data module must hand it its own loaders.
            self._say(
                f"off, {trainer.world_size} processes train (DDP): every epoch runs the backbone."
            )
            return
        if getattr(module, "domain_loss", None) is not None:
            # Not attached: the domain loss needs backbone features of source and target images
            # computed with gradients in every step.
            self._say(
                "off, domain adaptation (da) trains on source and target features computed "
                "with gradients in every step: every epoch runs the backbone."
            )
            return
        if not batchnorm.stats_frozen(module.hparams.bn_policy, False):
            self._off_reason = (
                f"bn_policy={module.hparams.bn_policy} updates the BatchNorm statistics of frozen "
                "groups, so the frozen backbone is not a fixed function"
            )
        datamodule.feature_source = self

    def detach(self) -> None:
        if self.datamodule is not None and self.datamodule.feature_source is self:
            self.datamodule.feature_source = None
        self.store.close()  # spilled features: a later fit extracts or reads them back again
        self.trainer = self.module = self.datamodule = None

    def wrap(self, split: str, loader: DataLoader) -> Any:
        """The loader the data module hands to Lightning for `split`."""
        return SwitchingLoader(self, split, loader) if split in ("train", "val") else loader

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            log.info("Feature cache: %s", message)

    # ------------------------------------------------------------- decisions
    def _fitting(self) -> bool:
        from lightning.pytorch.trainer.states import TrainerFn

        t = self.trainer
        return t is not None and t.state.fn == TrainerFn.FITTING

    def features_loader(self, split: str, loader: DataLoader) -> DataLoader | None:
        """A loader of cached features for this epoch of `split`, or None to use images.

        Called at the epoch's first batch. Lightning fetches it after `on_train_epoch_start`
        (where the unfreeze schedule acts) for loaders with a length, as this one has; were a
        features batch ever to reach a backbone that trains, `FineTuneModule.forward` raises.
        """
        if not self._fitting() or not self.module.backbone_frozen:
            return None
        if split == "train" and getattr(self.module, "distiller", None) is not None:
            # thawkit.transfer.distill: the teacher runs on every training batch's images.
            self._say("off for training, a teacher distils into this run: it needs the images.")
            return None
        if self._off_reason is not None:
            self._say(f"off, {self._off_reason}.")
            return None
        dataset = loader.dataset
        if getattr(dataset, "samples", None) is None or getattr(dataset, "transform", None) is None:
            self._say(f"off, the {split} dataset has no `samples` and `transform` to key on.")
            return None
        random = is_random(dataset.transform)
        view = 0
        if split == "train":
            dm, epoch = self.datamodule, self.trainer.current_epoch
            mixer = getattr(dm, "mixer", None)
            if mixer is not None and mixer.active(epoch, self.trainer.max_epochs):
                self._say(
                    "off in epochs with Mixup/CutMix: mixing cached features is not mixing "
                    "images, so those epochs run the backbone on mixed images."
                )
                return None
            if random:
                if self.views == 0:
                    self._say(
                        "off while augmentation is on (callbacks.speed.feature_views=0): the "
                        "backbone runs on freshly augmented images every epoch."
                    )
                    return None
                view = epoch % self.views
                self._say(
                    f"augmentation is on: {self.views} augmented view(s) per training image are "
                    f"cached; epoch e trains on view e mod {self.views}."
                )
        features = self._features(split, dataset, view, random)
        return None if features is None else loader_like(loader, features)

    # ------------------------------------------------------------- extraction
    def stored(self, split: str, dataset: Any, backbone: torch.nn.Module) -> Dataset | None:
        """The features of `split` already computed from `dataset` by a backbone equal to
        `backbone` (same parameters and buffers), or None; never extracts.

        The validation report after fit (thawkit.reporting.val_report) scores the best
        checkpoint on val: when its backbone is the frozen one the features came from, the
        head alone on these rows gives the same logits without a second pass over the images.
        """
        if self.module is None or self._off_reason is not None:
            return None
        if getattr(dataset, "samples", None) is None or is_random(dataset.transform):
            return None
        return self.store.dataset(self._key(split, dataset, 0, False, backbone=backbone))

    def _key(
        self,
        split: str,
        dataset: Any,
        view: int,
        random: bool,
        files: bool = True,
        backbone: torch.nn.Module | None = None,
    ) -> str:
        module = self.module
        backbone = module.backbone if backbone is None else backbone
        images = getattr(dataset, "images", None)
        first = next(module.backbone.parameters())
        return cache_key(
            backbone=module.hparams.backbone,
            weights=module.hparams.weights,
            # Hashed every time (~30 ms for 3.4M parameters): a version-counter shortcut would
            # miss changes made through `.data`.
            state=module_digest(backbone),
            transform=repr(dataset.transform),
            images=images.describe() if images is not None else "decoded from file",
            # Without the files: the persistent cache's rows are keyed by file, under the split.
            files=files_digest(dataset.samples) if files else f"rows of {split}",
            view=view,
            seed=self._view_seed(view) if random else None,
            precision=self.trainer.precision,
            device=module.device.type,
            channels_last=first.dim() == 4
            and first.is_contiguous(memory_format=torch.channels_last),
        )

    def _view_seed(self, view: int) -> int:
        return int(getattr(self.datamodule, "seed", 0) or 0) * 1009 + view

    def _features(self, split: str, dataset: Any, view: int, random: bool) -> Dataset | None:
        """The (feature row, label) items of `split`: stored, read back, or extracted now."""
        key = self._key(split, dataset, view, random)
        cached = self.store.dataset(key)
        if cached is not None:
            return cached
        rows: dict[str, torch.Tensor] = {}
        ids: list[str] = []
        if self.disk is not None:
            disk_key = self._key(split, dataset, view, random, files=False)
            ids = [file_identity(p) for p, _ in dataset.samples]
            rows = load_rows(self.disk, disk_key, ids)
        todo = [i for i in range(len(dataset)) if not ids or ids[i] not in rows]
        module, trainer = self.module, self.trainer
        was_training = module.training
        devices = [module.device] if module.device.type == "cuda" else []
        writer = self.store.writer(key)
        start = time.perf_counter()
        # The run's random stream continues as if the cache did not exist; the augmentations of
        # a view come from their own seeds (reproducible, and part of the key).
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self._view_seed(view))
            try:
                if not self._forward_checked and not self._frozen_forward_is_eval(dataset):
                    return None
                module.eval()
                items = ViewItems(dataset, self._view_seed(view)) if random else dataset
                fresh = feature_batches(
                    module.backbone,
                    Subset(items, todo) if len(todo) < len(dataset) else items,
                    batch_size=self.batch_size or getattr(self.datamodule, "batch_size", 32),
                    device=module.device,
                    num_workers=self._extraction_workers(dataset),
                    forward_context=trainer.precision_plugin.forward_context(),
                )
                # Rows reach the store batch by batch: beyond its budget they go to a file, so
                # the split's features are never all in memory (thawkit.data.feature_store).
                for chunk in in_dataset_order(ids, rows, todo, fresh if todo else iter(())):
                    writer.add(chunk)
            finally:
                module.train(was_training)
        labels = torch.as_tensor([y for _, y in dataset.samples], dtype=torch.long)
        features = writer.finish(labels)
        elapsed = time.perf_counter() - start
        self.extract_time_s += elapsed
        self.num_reused += len(dataset) - len(todo)
        if todo:  # `extractions` lists the passes through the backbone
            self.extractions.append({
                "split": split, "view": view, "n": len(todo), "s": elapsed,
                "spilled": writer.path is not None,
            })  # fmt: skip
        self._say_extracted(split, view, random, len(todo), len(dataset) - len(todo), elapsed)
        if writer.path is not None:
            self._say(
                f"the features beyond callbacks.speed.feature_cache_mb="
                f"{self.store.budget_bytes / 2**20:g} are read from a file in {writer.path.parent}"
            )
        if self.disk is not None and todo:
            save_rows(self.disk, disk_key, ids, rows_tensor(features))
        return features

    def _extraction_workers(self, dataset: Any) -> int:
        # Images already decoded in memory need no worker processes: starting one costs more
        # than the resize and crop it would take over (measured: 45 vs 20 ms/image).
        images = getattr(dataset, "images", None)
        if images is not None and all(p in images for p, _ in dataset.samples):
            return 0
        return getattr(self.datamodule, "num_workers", 0)

    def _say_extracted(
        self, split: str, view: int, random: bool, n: int, reused: int, s: float
    ) -> None:
        what = f"augmented view {view}" if random else "no augmentation"
        if not n:
            log.info("Feature cache: %d %s images (%s) read back from the persistent cache",
                     reused, split, what)  # fmt: skip
            return
        log.info(
            "Feature cache: %d %s images through the frozen backbone once (%s) in %.2f s%s",
            n,
            split,
            what,
            s,
            f"; {reused} read back from the persistent cache" if reused else "",
        )

    def _frozen_forward_is_eval(self, dataset: Any) -> bool:
        """Whether the frozen backbone's training forward equals its evaluation forward."""
        module = self.module
        n = min(len(dataset), 4)
        x = torch.stack([dataset[i][0] for i in range(n)]).to(module.device)
        with torch.no_grad():
            module.train()  # the BatchNorm policy puts frozen groups' norms in eval mode
            train_out = module.backbone(x)
            module.eval()
            eval_out = module.backbone(x)
        diff = float((train_out - eval_out).abs().max())
        self._forward_checked = True
        if diff > _FORWARD_TOLERANCE * max(1.0, float(eval_out.abs().max())):
            self._off_reason = (
                f"the frozen backbone's training forward differs from its evaluation forward "
                f"(max difference {diff:.3g}): it has dropout or stochastic depth"
            )
            self._say(f"off, {self._off_reason}.")
            return False
        return True
