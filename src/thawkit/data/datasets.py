"""The dataset every loader serves: (path, label) samples decoded to RGB and transformed."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from thawkit.data import folder
from thawkit.data.image_cache import ImageCache


class ImageDataset(Dataset):
    """(path, label) samples decoded to RGB (or taken from a decoded-image cache), transformed.

    `samples`, `transform` and `images` are public: the feature cache keys on them
    (`thawkit.data.feature_cache`).
    """

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
