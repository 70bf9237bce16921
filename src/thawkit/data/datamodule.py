"""ImageFolderDataModule: a user's image folder (or the default digits) ready for a backbone."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Sampler

from thawkit.data import folder
from thawkit.data.digits import DEFAULT_ROOT, export_digits
from thawkit.data.image_cache import ImageCache
from thawkit.data.imbalance import (
    IMBALANCE_MODES,
    SeededWeightedSampler,
    class_counts,
    loss_class_weights,
    sample_weights,
    sampled_class_counts,
)
from thawkit.data.mixing import BatchMixer
from thawkit.data.transforms import eval_transform, train_transform
from thawkit.models.backbone import Preprocessing, resolve_preprocessing
from thawkit.seeding import (
    MIX,
    ORDER,
    SeededEpochSampler,
    SeededSamples,
    batch_position,
    batches_done_in_epoch,
    derive_seed,
    resolve_seed,
    seeded,
)
from thawkit.transfer.domain import DomainBatch

log = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("skip", "error")
# The default digits are 8x8 scans: 64 px keeps a pretrained CNN's receptive fields busy and
# the default run inside a CPU budget.
DIGITS_IMAGE_SIZE = 64
COUNTS_TAG = "data/class_counts"
# Seed stream of the unlabelled target images' order and augmentation (domain adaptation): not
# one of thawkit.seeding's stream ids, so target draws never repeat the source's.
TARGET_STREAM = 101


class ImageDataset(Dataset):
    """(path, label) samples decoded to RGB (or taken from a decoded-image cache), transformed."""

    def __init__(
        self, samples: list[folder.Sample], transform: Any, images: ImageCache | None = None
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.images = images

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        image = self.images.load(path) if self.images is not None else folder.load_rgb(path)
        return self.transform(image), label


class CyclingSampler(Sampler[int]):
    """`num_samples` indices per epoch from back-to-back permutations of `n` items.

    The unlabelled target set gets exactly as many draws per epoch as the source set, whatever
    its size, so turning domain adaptation on changes neither the epoch's length nor the steps
    the LR schedule counts. Seeded by (seed, epoch), like the source order.
    """

    def __init__(self, n: int, num_samples: int, seed: int, epoch: int = 0) -> None:
        self.n, self.num_samples, self.seed, self.epoch = n, num_samples, seed, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order: list[int] = []
        for k in range(math.ceil(self.num_samples / self.n)):
            g = torch.Generator().manual_seed(derive_seed(self.seed, ORDER, self.epoch, k))
            order += torch.randperm(self.n, generator=g).tolist()
        return iter(order[: self.num_samples])

    def __len__(self) -> int:
        return self.num_samples


def _one_thread_per_worker(_: int) -> None:
    # Workers and the main process would otherwise each start a full set of torch threads.
    torch.set_num_threads(1)


def default_num_workers() -> int:
    """Leave one core to the training process; at most 4 workers."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def as_preprocessing(preprocessing: Preprocessing | Mapping[str, Any] | str) -> Preprocessing:
    """A `Preprocessing`, its `to_dict()` form, or a backbone name -> `Preprocessing`."""
    if isinstance(preprocessing, Preprocessing):
        return preprocessing
    if isinstance(preprocessing, str):
        return resolve_preprocessing(preprocessing)
    if isinstance(preprocessing, Mapping):
        d = dict(preprocessing)
        return Preprocessing(
            input_size=int(d["input_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            interpolation=str(d["interpolation"]),
            crop_pct=float(d["crop_pct"]),
        )
    raise TypeError(
        f"preprocessing={preprocessing!r}: pass the backbone's Preprocessing "
        "(thawkit.models.backbone.resolve_preprocessing(name)) or the backbone's name."
    )


def counts_table(counts: Mapping[str, Mapping[str, int]]) -> str:
    """Per-class counts of every split as a fixed-width text table (with totals)."""
    splits = list(counts)
    names = list(next(iter(counts.values())))
    width = max(len(c) for c in [*names, "class", "total"])
    col = max(8, *(len(s) + 2 for s in splits))
    lines = ["class".ljust(width) + "".join(s.rjust(col) for s in splits)]
    lines += [c.ljust(width) + "".join(str(counts[s][c]).rjust(col) for s in splits) for c in names]
    lines.append(
        "total".ljust(width) + "".join(str(sum(counts[s].values())).rjust(col) for s in splits)
    )
    return "\n".join(lines)


def counts_figure(counts: Mapping[str, Mapping[str, int]]) -> Any:
    """Grouped bar chart (matplotlib Figure, no pyplot state) of per-class counts per split."""
    from matplotlib.figure import Figure

    splits = list(counts)
    names = list(next(iter(counts.values())))
    x = np.arange(len(names))
    bar = 0.8 / len(splits)
    fig = Figure(figsize=(min(24.0, max(4.0, 0.35 * len(names) * len(splits) + 2)), 3.5))
    ax = fig.add_subplot()
    for i, split in enumerate(splits):
        ax.bar(x + (i - (len(splits) - 1) / 2) * bar, [counts[split][c] for c in names], bar,
               label=split)  # fmt: skip
    ax.set_xticks(x, names, rotation=90 if len(names) > 12 else 0)
    ax.set_ylabel("images")
    ax.set_title("Images per class")
    ax.legend()
    fig.tight_layout()
    return fig


class ImageFolderDataModule(L.LightningDataModule):
    """Reads an ImageFolder, checks every file once, and serves batches for a backbone.

    Args:
        root: the image folder (`train/`, `val/`, optional `test/` of class folders, or one
            folder of class folders); None = the default digits dataset at `digits_root`.
        digits_root: where the default digits dataset is exported (once).
        preprocessing: the backbone's preprocessing (mean/std, size, interpolation, crop):
            a `Preprocessing`, its dict form, or the backbone's name.
        image_size: input side in pixels; None = the backbone's own (64 for the digits).
        batch_size: images per batch.
        num_workers: DataLoader workers; None = one less than the cores, at most 4.
        val_fraction, test_fraction: stratified fractions of the folder split off when there
            is no `val/` (or `test/`) folder.
        seed: seed of splits and of the weighted sampler.
        on_bad_image: `skip` (warn, name each file, record it) or `error` (fail, list all).
        check_images: decode every file once at setup (turning it off saves the setup time
            but a broken file then stops training when it is reached).
        augment: keyword arguments of `thawkit.data.transforms.train_transform`.
        mix: keyword arguments of `thawkit.data.mixing.BatchMixer` (mode, alphas, ...).
        imbalance: `mode` (none | sampler | loss | both), `sampler_weighting`,
            `loss_weighting`, `beta` (see `thawkit.data.imbalance`).
        target_root: domain adaptation: a folder of unlabelled target-domain images (nested
            folders allowed, their names ignored). Training batches then carry a target batch
            (`thawkit.transfer.domain.DomainBatch`), with the training transform and no mixing.
        target_val_root: a labelled target folder (`<class>/` folders named as the source's
            classes), served as a second validation loader (`target/acc`).
    """

    def __init__(
        self,
        root: str | None = None,
        digits_root: str | None = None,
        preprocessing: Preprocessing | Mapping[str, Any] | str | None = None,
        image_size: int | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.0,
        seed: int = 0,
        on_bad_image: str = "skip",
        check_images: bool = True,
        augment: Mapping[str, Any] | None = None,
        mix: Mapping[str, Any] | None = None,
        imbalance: Mapping[str, Any] | None = None,
        target_root: str | None = None,
        target_val_root: str | None = None,
    ) -> None:
        super().__init__()
        if preprocessing is None:
            raise ValueError(
                "ImageFolderDataModule needs the backbone's preprocessing (mean/std, size, "
                "interpolation, crop): pass preprocessing=<backbone name> or "
                "thawkit.models.backbone.resolve_preprocessing(<backbone name>)."
            )
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be >= 1")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(
                f"data.on_bad_image={on_bad_image!r} is not one of {BAD_IMAGE_POLICIES}"
            )
        self.imbalance = {
            "mode": "none",
            "sampler_weighting": "inverse",
            "loss_weighting": "inverse",
            "beta": 0.999,
        }
        self.imbalance.update(imbalance or {})
        if self.imbalance["mode"] not in IMBALANCE_MODES:
            raise ValueError(
                f"imbalance={self.imbalance['mode']!r} is not one of {IMBALANCE_MODES}"
            )
        self.root = root
        self.digits_root = digits_root or str(DEFAULT_ROOT)
        self.preprocessing = as_preprocessing(preprocessing)
        default_size = DIGITS_IMAGE_SIZE if root is None else self.preprocessing.input_size
        self.image_size = int(image_size or default_size)
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.seed = seed
        self._seed = resolve_seed(seed)  # seed=None: one random seed for the whole run
        self.on_bad_image = on_bad_image
        self.check_images = check_images
        self.augment = dict(augment or {"name": "basic"})
        self.mix_cfg = dict(mix or {"mode": "none"})
        # Fail on a bad augmentation knob now, not when the first batch is built.
        train_transform(self.preprocessing, self.image_size, **self.augment)
        self.class_names: list[str] = []
        self.splits: dict[str, list[folder.Sample]] = {}
        self.skipped_files: dict[str, str] = {}
        self.check_time_s = 0.0
        self.mixer: BatchMixer | None = None
        # Set by thawkit.run.speed.SpeedOptions: decoded images held in memory, and the
        # pooled-feature
        # cache that serves head-only epochs (a `wrap(split, loader)` that picks the source).
        self.image_cache: ImageCache | None = None
        self.feature_source: Any = None
        self._ready = False
        self._counts_logged_to: set[int] = set()
        self.target_root, self.target_val_root = target_root, target_val_root
        self.target_samples: list[folder.Sample] = []
        self.target_val_samples: list[folder.Sample] = []

    # ----------------------------------------------------------------- setup
    def prepare_data(self) -> None:
        if self.root is None:
            export_digits(self.digits_root)

    def setup(self, stage: str | None = None) -> None:
        """Find splits and classes, check every file once (first call), log the counts."""
        if not self._ready:
            self._scan()
            self._ready = True
        self._log_counts_to_tensorboard()

    def _scan(self) -> None:
        root = self.root if self.root is not None else str(export_digits(self.digits_root))
        self.class_names, splits = folder.discover(
            root, self.val_fraction, self.test_fraction, self.seed
        )
        if self.check_images:
            splits = self._drop_bad_images(root, splits)
        self.splits = splits
        self.mixer = BatchMixer(num_classes=self.num_classes, **self.mix_cfg)
        log.info("Images per class:\n%s", counts_table(self.class_counts))
        self._scan_target()

    def _scan_target(self) -> None:
        """The unlabelled target images and the labelled target folder (domain adaptation)."""
        if self.target_root is not None:
            root = Path(self.target_root).expanduser()
            if not root.is_dir():
                raise folder.DataError(
                    f"da.target_root={root} is not a folder. Point it at a folder of target-"
                    "domain images (the shifted digits: python -m thawkit.data.shifted_digits)."
                )
            paths = [str(p) for p in folder._image_files(root)]
            bad = self._unreadable_targets(paths)
            paths = [p for p in paths if p not in bad]
            if not paths:
                raise folder.DataError(
                    f"da.target_root={root} holds no readable images "
                    f"({', '.join(folder.IMG_EXTENSIONS)}). Add target-domain images to it."
                )
            self.target_samples = [(p, -1) for p in paths]  # unlabelled
            log.info("Domain adaptation: %d unlabelled target images in %s", len(paths), root)
        if self.target_val_root is not None:
            root = Path(self.target_val_root).expanduser()
            if not root.is_dir():
                raise folder.DataError(
                    f"da.target_val_root={root} is not a folder. Point it at labelled target "
                    "images in class folders named as the training classes, or set it to null."
                )
            _, samples = folder._read_split(root, self.class_names)
            bad = self._unreadable_targets([p for p, _ in samples])
            self.target_val_samples = [s for s in samples if s[0] not in bad]
            log.info(
                "Domain adaptation: %d labelled target images in %s",
                len(self.target_val_samples),
                root,
            )

    def _unreadable_targets(self, paths: list[str]) -> dict[str, str]:
        """Target images that cannot be read (skipped with a warning; none when not checking)."""
        bad = folder.find_bad_images(paths) if self.check_images else {}
        for p, why in bad.items():
            log.warning("Skipping unreadable target image %s (%s)", p, why)
        return bad

    def _drop_bad_images(
        self, root: str, splits: dict[str, list[folder.Sample]]
    ) -> dict[str, list[folder.Sample]]:
        paths = [p for samples in splits.values() for p, _ in samples]
        start = time.perf_counter()
        bad = folder.find_bad_images(paths)
        self.check_time_s = time.perf_counter() - start
        log.info("Checked %d images in %.2f s", len(paths), self.check_time_s)
        if bad and self.on_bad_image == "error":
            listing = "\n".join(f"  {p}: {why}" for p, why in bad.items())
            raise folder.DataError(
                f"{len(bad)} unreadable image(s) under {root}:\n{listing}\n"
                "Fix or remove them, or set data.on_bad_image=skip to train without them."
            )
        for p, why in bad.items():
            log.warning("Skipping unreadable image %s (%s)", p, why)
        self.skipped_files = bad
        splits = {k: [s for s in v if s[0] not in bad] for k, v in splits.items()}
        for split, samples in splits.items():
            if not samples:
                raise folder.DataError(
                    f"Every image of the {split} split under {root} is unreadable. "
                    "Replace the files listed above."
                )
        present = {y for _, y in splits["train"]}
        missing = [c for i, c in enumerate(self.class_names) if i not in present]
        if missing:
            raise folder.DataError(
                f"After skipping unreadable files, the training split under {root} has no "
                f"images of class(es) {missing}. Add readable images for them."
            )
        return splits

    def _log_counts_to_tensorboard(self) -> None:
        trainer = self.trainer
        if trainer is None or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and id(logger) not in self._counts_logged_to:
                counts = self.class_counts
                logger.experiment.add_figure(COUNTS_TAG, counts_figure(counts), global_step=0)
                table = counts_table(counts).replace("\n", "\n    ")
                logger.experiment.add_text(COUNTS_TAG, "    " + table, global_step=0)
                self._counts_logged_to.add(id(logger))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class in every split: {split: {class_name: count}}."""
        return {
            split: dict(
                zip(
                    self.class_names,
                    class_counts([y for _, y in s], self.num_classes).tolist(),
                    strict=True,
                )
            )
            for split, s in self.splits.items()
        }

    @property
    def class_weights(self) -> list[float] | None:
        """Loss weights per class when imbalance is `loss` or `both`, else None.

        With `both`, the weights are computed from the class frequencies that the weighted
        sampler produces, so sampler and loss together correct the imbalance once.
        """
        mode = self.imbalance["mode"]
        if mode not in ("loss", "both"):
            return None
        counts = class_counts([y for _, y in self.splits["train"]], self.num_classes)
        if mode == "both":
            counts = sampled_class_counts(counts, self.imbalance["sampler_weighting"])
        return loss_class_weights(counts, self.imbalance["loss_weighting"], self.imbalance["beta"])

    # ----------------------------------------------------------------- loaders
    def _loader(self, split: str, train: bool) -> DataLoader:
        pre, size = self.preprocessing, self.image_size
        if train:
            transform = train_transform(pre, size, **self.augment)
        else:
            transform = eval_transform(pre, size)
        dataset = ImageDataset(self.splits[split], transform, self.image_cache)
        trainer = self.trainer
        sampler = None
        epoch = trainer.current_epoch if trainer is not None else 0
        if train and self.imbalance["mode"] in ("sampler", "both"):
            labels = [y for _, y in self.splits[split]]
            counts = class_counts(labels, self.num_classes)
            weights = sample_weights(labels, counts, self.imbalance["sampler_weighting"])
            sampler = SeededWeightedSampler(weights, len(labels), seed=self._seed, epoch=epoch)
        if train:
            # Order and augmentation keyed by (seed, epoch, position): a resumed run continues
            # the epoch exactly, whatever the worker count (thawkit.seeding).
            def skip() -> int:
                return batches_done_in_epoch(trainer) * self.batch_size

            sampler = SeededEpochSampler(len(dataset), self._seed, epoch, sampler, skip)
            dataset = SeededSamples(dataset)
        # A training batch of one sample has no batch statistics (BatchNorm fails on it): drop
        # a last batch of one. Under DDP each rank gets ceil(n / world_size) samples.
        world = trainer.world_size if trainer is not None else 1
        per_rank = math.ceil(len(dataset) / world)
        drop_last = train and per_rank > 1 and per_rank % self.batch_size == 1
        return self._dataloader(dataset, sampler, drop_last)

    def _dataloader(self, dataset: Any, sampler: Any = None, drop_last: bool = False) -> DataLoader:
        """A DataLoader with the machine's settings.

        Workers of one torch thread each, kept alive between epochs; pinned memory only with a
        GPU.
        """
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_one_thread_per_worker if self.num_workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._wrap("train", self._loader("train", train=True))
        if not self.target_samples:
            return loader
        # Each step gets a source batch and a target batch (on_after_batch_transfer makes them
        # one DomainBatch); both loaders have the same length, so the epoch is the source's.
        target = self._target_loader(len(loader.sampler))
        return CombinedLoader({"source": loader, "target": target}, mode="max_size_cycle")

    def _target_loader(self, num_samples: int) -> DataLoader:
        transform = train_transform(self.preprocessing, self.image_size, **self.augment)
        dataset = SeededSamples(ImageDataset(self.target_samples, transform, self.image_cache))
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        seed = derive_seed(self._seed, TARGET_STREAM)
        cycle = CyclingSampler(len(self.target_samples), num_samples, seed, epoch)

        def skip() -> int:
            return batches_done_in_epoch(trainer) * self.batch_size

        sampler = SeededEpochSampler(num_samples, seed, epoch, cycle, skip)
        world = trainer.world_size if trainer is not None else 1
        per_rank = math.ceil(num_samples / world)
        drop_last = per_rank > 1 and per_rank % self.batch_size == 1  # as the source's
        return self._dataloader(dataset, sampler, drop_last)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        loader = self._wrap("val", self._loader("val", train=False))
        if not self.target_val_samples:
            return loader
        target = ImageDataset(
            self.target_val_samples, eval_transform(self.preprocessing, self.image_size)
        )
        return [loader, self._dataloader(target)]

    def _wrap(self, split: str, loader: DataLoader) -> Any:
        return loader if self.feature_source is None else self.feature_source.wrap(split, loader)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.splits:
            raise folder.DataError(
                "No test split: add a test/ folder or set data.test_fraction > 0"
            )
        return self._loader("test", train=False)

    def has_test(self) -> bool:
        return bool(self.splits.get("test"))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "target" in batch:  # domain adaptation: mix the source
            x, y = self.on_after_batch_transfer(batch["source"], dataloader_idx)
            return DomainBatch(x, y, batch["target"][0])
        # Mixing runs on the device, after the transfer: whole batches, not single images.
        trainer = self.trainer
        if trainer is None or not trainer.training or self.mixer is None:
            return batch
        if not self.mixer.active(trainer.current_epoch, trainer.max_epochs):
            return batch
        with seeded(derive_seed(self._seed, MIX, *batch_position(trainer))):
            return self.mixer(*batch)
