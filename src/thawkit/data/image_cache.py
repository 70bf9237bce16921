"""Decoded-image cache: every image decoded and resized once, held as uint8 under a memory budget.

Decoding a JPEG costs several milliseconds; a textbook loop pays it for every image in every
epoch. `ImageCache` decodes each file once, resizes its shorter side to the working resolution
(by default the evaluation resize, `thawkit.data.transforms.eval_resize`) with the same PIL resize
the evaluation transform uses, and keeps the pixels as a uint8 array. The transforms then run on
these small images instead of the full-resolution files.

- Evaluation is unchanged: the evaluation transform's `Resize` finds the image already at its
  size and passes it through, so val/test inputs are bit-identical to decoding the file.
- Training crops come from the resized image instead of the full-resolution file (the
  "presizing" of fastai): a random crop is taken from fewer source pixels. `short_side` raises
  that resolution when it matters.
- The cache hands out PIL images made from its arrays (a 0.1 ms copy), not tensors: on tensors,
  torchvision's rotation and affine kernels reject bicubic interpolation, which the `strong`
  preset uses with bicubic backbones (EfficientNet-Lite0). Augmenting a cached image as PIL costs
  about 1.0 ms against 0.5 ms as a tensor (measured at 160 px), under 1% of a training step.
- Beyond `budget_mb`, images are not stored: they are decoded (and resized the same way) on the
  fly, so the budget changes speed, never what is trained.
- With the persistent cache (`disk`, `thawkit.data.disk_cache`), the resized pixels of every
  file are also kept on disk, keyed by the file's identity, the side and the interpolation: a
  later run reads them back (~0.1 ms an image) instead of decoding the file.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from thawkit.data.disk_cache import DiskCache, digest, file_identity
from thawkit.data.folder import decode_workers, load_rgb, ordered_map

log = logging.getLogger(__name__)


def decode_resized(
    path: str | os.PathLike, short_side: int, interpolation: str = "bilinear"
) -> Image.Image:
    """Decode an image to RGB and resize its shorter side to `short_side`.

    Uses PIL's resize with antialiasing, exactly as `transforms.v2.Resize(short_side)` does on a
    PIL image, so an evaluation transform that resizes to `short_side` passes the result through.
    """
    rgb = load_rgb(path)
    return F.resize(rgb, short_side, interpolation=InterpolationMode(interpolation))


class ImageCache:
    """Images decoded and resized once, held in memory as uint8 arrays up to a budget.

    Args:
        short_side: shorter side, in pixels, that every image is resized to.
        budget_mb: memory the cached pixels may take; images beyond it decode on the fly.
        interpolation: resize interpolation (the backbone's, e.g. `bilinear` or `bicubic`).
        workers: decoding threads for `fill`; None = `thawkit.data.folder.decode_workers`
            (two per core), 1 = serially (the same pixels either way).
        disk: the persistent cache the resized pixels are also kept in (None = memory only).
    """

    def __init__(
        self,
        short_side: int,
        budget_mb: float = 1024.0,
        interpolation: str = "bilinear",
        workers: int | None = None,
        disk: DiskCache | None = None,
    ) -> None:
        if short_side < 1:
            raise ValueError(f"image cache short_side={short_side} must be >= 1 pixel")
        if budget_mb < 0:
            raise ValueError(
                f"callbacks.speed.image_cache_mb={budget_mb} must be >= 0 (0 = no cache)"
            )
        InterpolationMode(interpolation)  # fail now on an unknown name
        self.short_side = short_side
        self.budget_bytes = int(budget_mb * 2**20)
        self.interpolation = interpolation
        self.workers = workers or decode_workers()
        self.images: dict[str, np.ndarray] = {}  # path -> H x W x 3 uint8
        self.nbytes = 0
        self.num_spilled = 0
        self.fill_time_s = 0.0
        self.disk = disk
        self.num_decoded = 0  # files decoded by `fill`
        self.num_reused = 0  # images `fill` read back from the persistent cache

    def __contains__(self, path: str) -> bool:
        return path in self.images

    def __len__(self) -> int:
        return len(self.images)

    def describe(self) -> str:
        """What the cache holds, for cache keys: inputs change when the resize changes."""
        return f"ImageCache(short_side={self.short_side}, interpolation={self.interpolation})"

    def load(self, path: str) -> Image.Image:
        """The cached image (a copy), or the same image decoded and resized now."""
        pixels = self.images.get(path)
        if pixels is not None:
            return Image.fromarray(pixels, mode="RGB")
        return decode_resized(path, self.short_side, self.interpolation)

    def _disk_key(self, path: str) -> str:
        return digest("image", file_identity(path), str(self.short_side), self.interpolation)

    def _from_disk(self, key: str) -> np.ndarray | None:
        payload = self.disk.read("images", key)
        if payload is None:
            return None
        try:
            height, width = struct.unpack_from("<II", payload)
            return np.frombuffer(payload, np.uint8, offset=8).reshape(height, width, 3)
        except (struct.error, ValueError) as e:
            self.disk.corrupt("images", key, f"not an image of its stated size: {e}")
            return None

    def _try_decode(self, path: str) -> tuple[np.ndarray | None, bool]:
        """The resized pixels (None: unreadable), and whether they came from the disk cache."""
        key = None
        if self.disk is not None:
            try:
                key = self._disk_key(path)
            except OSError:
                return None, False
            pixels = self._from_disk(key)
            if pixels is not None:
                return pixels, True
        try:
            pixels = np.asarray(decode_resized(path, self.short_side, self.interpolation))
        except Exception:  # PIL raises many types for broken files
            return None, False
        if key is not None and pixels.ndim == 3 and pixels.shape[2] == 3:
            header = struct.pack("<II", pixels.shape[0], pixels.shape[1])
            self.disk.write("images", key, header + np.ascontiguousarray(pixels).tobytes())
        return pixels, False

    def fill(self, paths: Sequence[str]) -> None:
        """Decode `paths` (in this order) into the cache until the budget is used up.

        Images that do not fit are counted in `num_spilled` and decode on the fly in `load`.
        """
        start = time.perf_counter()
        todo = [p for p in dict.fromkeys(paths) if p not in self.images]
        # Decode in chunks so that decoding stops soon after the budget is reached.
        chunk = max(1, 4 * self.workers)
        with ordered_map(self.workers) as parallel_map:
            for i in range(0, len(todo), chunk):
                if self.nbytes >= self.budget_bytes:
                    self.num_spilled += len(todo) - i
                    break
                part = todo[i : i + chunk]
                decoded = parallel_map(self._try_decode, part)
                for path, (img, reused) in zip(part, decoded, strict=True):
                    if img is None:  # unreadable: `load` raises the real error when it is used
                        continue
                    self.num_reused += reused
                    self.num_decoded += not reused
                    size = img.nbytes
                    if self.nbytes + size > self.budget_bytes:
                        self.num_spilled += 1
                        continue
                    self.images[path] = img
                    self.nbytes += size
        self.fill_time_s += time.perf_counter() - start
        log.info(
            "Image cache: %d images decoded once at %d px shorter side%s, %.1f MB of the %.0f MB "
            "budget, in %.2f s%s",
            len(self.images),
            self.short_side,
            f" ({self.num_reused} read back from the persistent cache)" if self.num_reused else "",
            self.nbytes / 2**20,
            self.budget_bytes / 2**20,
            self.fill_time_s,
            f"; {self.num_spilled} beyond the budget decode on the fly each time"
            if self.num_spilled
            else "",
        )
