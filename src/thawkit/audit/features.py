"""What the audit measures of every image: one frozen forward pass, file hashes, image headers.

The forward pass is the feature cache's (`thawkit.data.feature_rows.extract_features`, keyed
and stored by `thawkit.data.feature_store`): pooled features of the evaluation transform, in eval
mode, without gradients. With `feature_cache_dir` set, a second audit of the same files with the
same backbone reads them back instead of running the backbone again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from thawkit.data import folder
from thawkit.data.feature_rows import extract_features
from thawkit.data.feature_store import FeatureStore, cache_key, files_digest, module_digest
from thawkit.data.file_policy import open_image
from thawkit.data.transforms import eval_transform
from thawkit.models.backbone import Backbone

log = logging.getLogger(__name__)

# Bytes read at a time when hashing a file.
_CHUNK = 1 << 20


@dataclass
class Measured:
    """Per-image measurements, row i for sample i (all splits in one list)."""

    features: np.ndarray  # (N, D) float32 pooled features; zeros where unreadable
    contrast: np.ndarray  # (N,) pixel standard deviation (0-1 scale) of the model's input
    sizes: np.ndarray  # (N, 2) width, height from the header; 0 where unreadable
    hashes: list[str]  # content hash of each file's bytes
    errors: list[str]  # why an image cannot be decoded ("" = it can)
    forward_s: float  # time of the forward pass (0 when the features came from the cache)


class _AuditImages(Dataset):
    """(input tensor, contrast) per sample; an unreadable file gives zeros and contrast -1."""

    def __init__(self, samples: Sequence[folder.Sample], transform: Any, mean: Any, std: Any):
        self.samples = list(samples)
        self.transform = transform
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, float]:
        try:
            x = self.transform(folder.load_rgb(self.samples[i][0]))
        except Exception:  # noqa: BLE001 - PIL raises many types; the header pass names it
            return self._blank(), -1.0
        # The spread of what the model sees, back on the 0-1 pixel scale.
        return x, float((x * self.std + self.mean).std())

    def _blank(self) -> torch.Tensor:
        size = getattr(self, "_size", None)
        if size is None:
            size = self._size = self.transform(Image.new("RGB", (8, 8))).shape
        return torch.zeros(size)


def file_hash(path: str) -> str:
    """blake2b of the file's bytes: byte-identical files, and only they, share it."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def header(path: str) -> tuple[int, int, str]:
    """(width, height, problem) from the image header alone ("" = readable header)."""
    try:
        with open_image(path) as img:
            w, h = img.size
        return w, h, ""
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        return 0, 0, f"{type(e).__name__}: {e}"


def measure(
    samples: Sequence[folder.Sample],
    backbone: Backbone,
    image_size: int,
    batch_size: int = 32,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    feature_cache_dir: str | None = None,
    weights: str = "",
    progress: bool = True,
) -> Measured:
    """Hash, read the header of, and run the frozen backbone once over every sample."""
    paths = [p for p, _ in samples]
    hashes = [file_hash(p) for p in paths]
    heads = [header(p) for p in paths]
    pre = backbone.preprocessing
    transform = eval_transform(pre, image_size)
    dataset = _AuditImages(samples, transform, pre.mean, pre.std)
    store = FeatureStore(feature_cache_dir)
    key = cache_key(
        purpose="audit",
        backbone=backbone.name,
        weights=weights,
        state=module_digest(backbone),
        transform=repr(transform),
        files=files_digest(samples),
    )
    cached = store.get(key)
    forward_s = 0.0
    if cached is None:
        backbone.eval().to(device)
        start = time.perf_counter()
        feats, contrast = extract_features(
            backbone,
            dataset,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            progress="Features (frozen backbone)" if progress else None,
        )
        forward_s = time.perf_counter() - start
        log.info("Audit: %d images through the frozen backbone in %.1f s", len(paths), forward_s)
        store.put(key, feats, contrast)
    else:
        feats, contrast = cached
        log.info("Audit: features of %d images from the feature cache", len(paths))
    contrast_np = contrast.double().numpy()
    errors = [
        problem or ("cannot be decoded" if c < 0 else "")
        for (_, _, problem), c in zip(heads, contrast_np, strict=True)
    ]
    return Measured(
        features=feats.float().numpy(),
        contrast=contrast_np,
        sizes=np.array([(w, h) for w, h, _ in heads], dtype=np.int64).reshape(-1, 2),
        hashes=hashes,
        errors=errors,
        forward_s=forward_s,
    )
