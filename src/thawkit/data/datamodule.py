"""ImageFolderDataModule: a user's image folder (or the default digits) ready for a backbone.

What it uses lives beside it: reading and checking folders (`folder`), the dataset
(`datasets`), the loaders (`loaders`), the samplers (`imbalance`, `samplers`), transforms,
batch mixing, and domain adaptation's target images (`targets`). The class-count figure is
drawn by the reporting side (`thawkit.reporting.tensorboard`, `thawkit.reporting.plots`) from
`class_counts`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader

from thawkit.config.schema import DataSchema, ImbalanceSchema, check_args
from thawkit.data import folder
from thawkit.data.counts import counts_table, split_class_counts
from thawkit.data.datasets import ImageDataset
from thawkit.data.digits import DEFAULT_ROOT, export_digits
from thawkit.data.disk_cache import DiskCache
from thawkit.data.exclude import apply_exclude
from thawkit.data.file_policy import log_skipped
from thawkit.data.image_cache import ImageCache
from thawkit.data.imbalance import (
    SeededWeightedSampler,
    class_counts,
    loss_class_weights,
    sample_weights,
    sampled_class_counts,
)
from thawkit.data.loaders import build_loader, current_epoch, default_num_workers, training_loader
from thawkit.data.mixing import BatchMixer
from thawkit.data.samplers import CyclingSampler
from thawkit.data.scan_cache import find_bad_images
from thawkit.data.targets import DomainBatch, labelled_targets, unlabelled_targets
from thawkit.data.transforms import as_preprocessing, eval_transform, train_transform
from thawkit.models.backbone import Preprocessing
from thawkit.seeding import MIX, batch_position, derive_seed, resolve_seed, seeded

log = logging.getLogger(__name__)

# The default digits are 8x8 scans: 64 px keeps a pretrained CNN's receptive fields busy and
# the default run inside a CPU budget.
DIGITS_IMAGE_SIZE = 64
# Seed stream of the unlabelled target images' order and augmentation (domain adaptation): not
# one of thawkit.seeding's stream ids, so target draws never repeat the source's.
TARGET_STREAM = 101


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
        on_bad_image: `skip` (warn, name each file, record it) or `error` (fail, list all):
            unreadable files and images above PIL's decompression-bomb limit. What the file
            policy leaves out (`thawkit.data.file_policy`) is recorded in `skipped_files` too.
        check_images: decode every file once at setup (turning it off saves the setup time
            but a broken file then stops training when it is reached).
        augment: keyword arguments of `thawkit.data.transforms.train_transform`.
        mix: keyword arguments of `thawkit.data.mixing.BatchMixer` (mode, alphas, ...).
        imbalance: `mode` (none | sampler | loss | both), `sampler_weighting`,
            `loss_weighting`, `beta` (see `thawkit.data.imbalance`).
        target_root: domain adaptation: a folder of unlabelled target-domain images (nested
            folders allowed, their names ignored). Training batches then carry a target batch
            (`thawkit.data.targets.DomainBatch`), with the training transform and no mixing.
        target_val_root: a labelled target folder (`<class>/` folders named as the source's
            classes), served as a second validation loader (`target/acc`).
        exclude: an audit's `audit.json` or a text file of paths: those files are left out of
            every split (`thawkit.data.exclude`); what was left out is in `excluded_files`.
    """

    def __init__(
        self,
        root: str | None = None,
        digits_root: str | None = None,
        preprocessing: Preprocessing | Mapping[str, Any] | str | None = None,
        image_size: int | None = DataSchema.image_size,
        batch_size: int = DataSchema.batch_size,
        num_workers: int | None = DataSchema.num_workers,
        val_fraction: float = DataSchema.val_fraction,
        test_fraction: float = DataSchema.test_fraction,
        seed: int = 0,  # the config's is the run's seed (${seed})
        on_bad_image: str = DataSchema.on_bad_image,
        check_images: bool = DataSchema.check_images,
        augment: Mapping[str, Any] | None = None,
        mix: Mapping[str, Any] | None = None,
        imbalance: Mapping[str, Any] | None = None,
        target_root: str | None = None,
        target_val_root: str | None = None,
        exclude: str | None = None,
    ) -> None:
        super().__init__()
        if preprocessing is None:
            raise ValueError(
                "ImageFolderDataModule needs the backbone's preprocessing (mean/std, size, "
                "interpolation, crop): pass preprocessing=<backbone name> or "
                "thawkit.models.backbone.resolve_preprocessing(<backbone name>)."
            )
        # The ranges and names are the schema's (thawkit.config.schema.DataSchema).
        check_args(
            DataSchema,
            "data",
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            on_bad_image=on_bad_image,
        )
        self.imbalance = dataclasses.asdict(ImbalanceSchema())
        self.imbalance.update(imbalance or {})
        check_args(ImbalanceSchema, "data.imbalance", **self.imbalance)
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
        # {split: class names without images there} for val and test (summary.json records it)
        self.classes_without_images: dict[str, list[str]] = {}
        self.check_time_s = 0.0
        self.mixer: BatchMixer | None = None
        # Set by thawkit.run.speed.SpeedOptions: decoded images held in memory, and the
        # pooled-feature cache that serves head-only epochs (a `wrap(split, loader)` that picks
        # the source).
        self.image_cache: ImageCache | None = None
        self.feature_source: Any = None
        # The persistent cache (thawkit.data.disk_cache), set by thawkit.run.train.build before
        # `setup`: the bad-image scan reuses its verdicts on unchanged files.
        self.disk_cache: DiskCache | None = None
        self.num_checked = 0
        self._ready = False
        self.target_root, self.target_val_root = target_root, target_val_root
        self.target_samples: list[folder.Sample] = []
        self.target_val_samples: list[folder.Sample] = []
        self.exclude = exclude
        self.excluded_files: dict[str, Any] | None = None  # summary.json records it

    # ----------------------------------------------------------------- setup
    def prepare_data(self) -> None:
        if self.root is None:
            export_digits(self.digits_root)

    def setup(self, stage: str | None = None) -> None:
        """Find splits and classes, check every file once, log the counts (first call only)."""
        if not self._ready:
            self._scan()
            self._ready = True

    def _scan(self) -> None:
        root = self.root if self.root is not None else str(export_digits(self.digits_root))
        ignored: dict[str, str] = {}  # what the file policy left out (thawkit.data.file_policy)
        self.class_names, splits = folder.discover(
            root, self.val_fraction, self.test_fraction, self.seed, skipped=ignored
        )
        log_skipped(ignored)
        if self.exclude is not None:
            splits, self.excluded_files = apply_exclude(
                splits, self.exclude, root, self.class_names
            )
        if self.check_images:
            splits = self._drop_bad_images(root, splits)
        self.skipped_files = {**ignored, **self.skipped_files}
        self.splits = splits
        for split in ("val", "test"):
            missing = folder.classes_without_images(self.class_names, splits.get(split, ()))
            if split in splits and missing:
                self.classes_without_images[split] = missing
                folder.warn_classes_without_images(split, missing)
        self.mixer = BatchMixer(num_classes=self.num_classes, **self.mix_cfg)
        log.info("Images per class:\n%s", counts_table(self.class_counts))
        self._scan_target()

    def _scan_target(self) -> None:
        """The unlabelled target images and the labelled target folder (domain adaptation)."""
        if self.target_root is not None:
            self.target_samples = unlabelled_targets(self.target_root, self.check_images)
        if self.target_val_root is not None:
            self.target_val_samples = labelled_targets(
                self.target_val_root, self.class_names, self.check_images
            )

    def _drop_bad_images(
        self, root: str, splits: dict[str, list[folder.Sample]]
    ) -> dict[str, list[folder.Sample]]:
        paths = [p for samples in splits.values() for p, _ in samples]
        start = time.perf_counter()
        bad, self.num_checked = find_bad_images(paths, root, self.disk_cache)
        self.check_time_s = time.perf_counter() - start
        reused = len(paths) - self.num_checked
        since = f" ({reused} unchanged since an earlier run: persistent cache)" if reused else ""
        log.info("Checked %d images in %.2f s%s", self.num_checked, self.check_time_s, since)
        splits = folder.drop_bad_images(root, splits, bad, self.class_names, self.on_bad_image)
        self.skipped_files = bad
        return splits

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class in every split: {split: {class_name: count}}."""
        return split_class_counts(self.class_names, self.splits)

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
    def _transform(self, train: bool) -> Any:
        if train:
            return train_transform(self.preprocessing, self.image_size, **self.augment)
        return eval_transform(self.preprocessing, self.image_size)

    def _loader(self, split: str, train: bool) -> DataLoader:
        samples = self.splits[split]
        dataset = ImageDataset(samples, self._transform(train), self.image_cache)
        if not train:
            return build_loader(dataset, self.batch_size, self.num_workers)
        draws = None
        if self.imbalance["mode"] in ("sampler", "both"):
            labels = [y for _, y in samples]
            counts = class_counts(labels, self.num_classes)
            weights = sample_weights(labels, counts, self.imbalance["sampler_weighting"])
            epoch = current_epoch(self.trainer)
            draws = SeededWeightedSampler(weights, len(labels), seed=self._seed, epoch=epoch)
        return training_loader(
            dataset,
            len(dataset),
            self._seed,
            self.trainer,
            self.batch_size,
            self.num_workers,
            draws,
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
        dataset = ImageDataset(self.target_samples, self._transform(True), self.image_cache)
        seed = derive_seed(self._seed, TARGET_STREAM)
        epoch = current_epoch(self.trainer)
        cycle = CyclingSampler(len(self.target_samples), num_samples, seed, epoch)
        return training_loader(
            dataset, num_samples, seed, self.trainer, self.batch_size, self.num_workers, cycle
        )

    def plain_loader(self, split: str) -> DataLoader:
        """The images of `split` with the evaluation transform, in order: no augmentation, no
        mixing, no feature cache (weight averaging evaluates and recalibrates BatchNorm on it)."""
        return self._loader(split, train=False)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        loader = self._wrap("val", self._loader("val", train=False))
        if not self.target_val_samples:
            return loader
        target = ImageDataset(self.target_val_samples, self._transform(False))
        return [loader, build_loader(target, self.batch_size, self.num_workers)]

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
