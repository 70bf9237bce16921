"""ImageFolderDataModule: a user's image folder (or the default digits) ready for a backbone."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from thawkit.backbone import Preprocessing
from thawkit.data import folder
from thawkit.data.digits import DEFAULT_ROOT, export_digits
from thawkit.data.imbalance import (
    IMBALANCE_MODES,
    SeededWeightedSampler,
    class_counts,
    loss_class_weights,
    sample_weights,
)
from thawkit.data.mixing import BatchMixer
from thawkit.data.transforms import eval_transform, train_transform

log = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("skip", "error")
# The default digits are 8x8 scans: 64 px keeps a pretrained CNN's receptive fields busy and
# the default run inside a CPU budget.
DIGITS_IMAGE_SIZE = 64


class ImageDataset(Dataset):
    """(path, label) samples decoded to RGB and transformed."""

    def __init__(self, samples: list[folder.Sample], transform: Any) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return self.transform(folder.load_rgb(path)), label


def _one_thread_per_worker(_: int) -> None:
    # Workers and the main process would otherwise each start a full set of torch threads.
    torch.set_num_threads(1)


def default_num_workers() -> int:
    """Leave one core to the training process; at most 4 workers."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class ImageFolderDataModule(L.LightningDataModule):
    """Reads an ImageFolder, checks every file once, and serves batches for a backbone.

    Args:
        root: the image folder (`train/`, `val/`, optional `test/` of class folders, or one
            folder of class folders); None = the default digits dataset at `digits_root`.
        digits_root: where the default digits dataset is exported (once).
        preprocessing: the backbone's preprocessing (mean/std, size, interpolation, crop).
        image_size: input side in pixels; None = the backbone's own.
        batch_size: images per batch.
        num_workers: DataLoader workers; None = one less than the cores, at most 4.
        val_fraction, test_fraction: stratified fractions split off when there is no
            `val/` (or `test/`) folder.
        seed: seed of splits and of the weighted sampler.
        on_bad_image: `skip` (warn, name each file, record it) or `error` (fail, list all).
        check_images: decode every file once at setup.
        augment: keyword arguments of `thawkit.data.transforms.train_transform`.
        mix: keyword arguments of `thawkit.data.mixing.BatchMixer` (mode, alphas, ...).
        imbalance: `mode` (none | sampler | loss | both), `sampler_weighting`,
            `loss_weighting`, `beta`.
    """

    def __init__(
        self,
        root: str | None = None,
        digits_root: str | None = None,
        preprocessing: Preprocessing | None = None,
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
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be >= 1")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"data.on_bad_image={on_bad_image!r} is not one of {BAD_IMAGE_POLICIES}")
        self.imbalance = {"mode": "none", "sampler_weighting": "inverse", "loss_weighting": "inverse", "beta": 0.999}
        self.imbalance.update(imbalance or {})
        if self.imbalance["mode"] not in IMBALANCE_MODES:
            raise ValueError(f"imbalance={self.imbalance['mode']!r} is not one of {IMBALANCE_MODES}")
        self.root = root
        self.digits_root = digits_root or str(DEFAULT_ROOT)
        self.preprocessing = preprocessing or Preprocessing()
        default_size = DIGITS_IMAGE_SIZE if root is None else self.preprocessing.input_size
        self.image_size = int(image_size or default_size)
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.seed = seed
        self.on_bad_image = on_bad_image
        self.check_images = check_images
        self.augment = dict(augment or {"name": "basic"})
        self.mix_cfg = dict(mix or {"mode": "none"})
        self.class_names: list[str] = []
        self.splits: dict[str, list[folder.Sample]] = {}
        self.skipped_files: dict[str, str] = {}
        self.mixer: BatchMixer | None = None
        self._ready = False

    # ----------------------------------------------------------------- setup
    def prepare_data(self) -> None:
        if self.root is None:
            export_digits(self.digits_root)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        root = self.root if self.root is not None else str(export_digits(self.digits_root))
        self.class_names, splits = folder.discover(root, self.val_fraction, self.test_fraction, self.seed)
        if self.check_images:
            paths = [p for samples in splits.values() for p, _ in samples]
            bad = folder.find_bad_images(paths)
            if bad and self.on_bad_image == "error":
                listing = "\n".join(f"  {p}: {why}" for p, why in sorted(bad.items()))
                raise folder.DataError(
                    f"{len(bad)} unreadable image(s) under {root}:\n{listing}\n"
                    "Fix or remove them, or set data.on_bad_image=skip to train without them."
                )
            for p, why in sorted(bad.items()):
                log.warning("Skipping unreadable image %s (%s)", p, why)
            self.skipped_files = bad
            splits = {k: [s for s in v if s[0] not in bad] for k, v in splits.items()}
            for split, samples in splits.items():
                present = {y for _, y in samples}
                missing = [self.class_names[c] for c in range(len(self.class_names)) if c not in present]
                if split == "train" and missing:
                    raise folder.DataError(
                        f"After skipping unreadable files, train/ has no images of {missing} "
                        f"under {root}. Add readable images for them."
                    )
        self.splits = splits
        self.mixer = BatchMixer(num_classes=self.num_classes, **self.mix_cfg)
        self._log_counts()
        self._ready = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class in every split: {split: {class_name: count}}."""
        return {
            split: dict(zip(self.class_names, class_counts([y for _, y in s], self.num_classes).tolist(), strict=True))
            for split, s in self.splits.items()
        }

    @property
    def class_weights(self) -> list[float] | None:
        """Loss weights per class when imbalance is `loss` or `both`, else None."""
        if self.imbalance["mode"] not in ("loss", "both"):
            return None
        counts = class_counts([y for _, y in self.splits["train"]], self.num_classes)
        return loss_class_weights(counts, self.imbalance["loss_weighting"], self.imbalance["beta"])

    def _log_counts(self) -> None:
        counts = self.class_counts
        splits = list(counts)
        width = max(len(c) for c in self.class_names + ["class"])
        lines = ["class".ljust(width) + "".join(f"{s:>8}" for s in splits)]
        for c in self.class_names:
            lines.append(c.ljust(width) + "".join(f"{counts[s][c]:>8}" for s in splits))
        log.info("Images per class:\n%s", "\n".join(lines))

    # ----------------------------------------------------------------- loaders
    def _loader(self, split: str, train: bool) -> DataLoader:
        pre, size = self.preprocessing, self.image_size
        transform = train_transform(pre, size, **self.augment) if train else eval_transform(pre, size)
        dataset = ImageDataset(self.splits[split], transform)
        sampler = None
        if train and self.imbalance["mode"] in ("sampler", "both"):
            labels = [y for _, y in self.splits[split]]
            counts = class_counts(labels, self.num_classes)
            weights = sample_weights(labels, counts, self.imbalance["sampler_weighting"])
            sampler = SeededWeightedSampler(weights, len(labels), seed=self.seed)
        # A last training batch of one sample gives no batch statistics: drop it.
        drop_last = train and len(dataset) % self.batch_size == 1 and len(dataset) > 1
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_one_thread_per_worker if self.num_workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.splits:
            raise folder.DataError("No test split: add a test/ folder or set data.test_fraction > 0")
        return self._loader("test", train=False)

    def has_test(self) -> bool:
        return bool(self.splits.get("test"))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if trainer is None or not trainer.training or self.mixer is None:
            return batch
        if not self.mixer.active(trainer.current_epoch, trainer.max_epochs):
            return batch
        return self.mixer(*batch)
