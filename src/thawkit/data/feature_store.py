"""The feature cache's keys and store: what determines pooled features, and where they are kept.

A key covers everything that determines the features (see `thawkit.data.feature_cache`); the
store holds them by key in memory for the run and, optionally, on disk across runs (the
persistent cache's rows per file are in `thawkit.data.feature_rows`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2 as T

from thawkit.textio import ERRORS

# Transforms that map an image to the same output every time; any other transform is random.
_DETERMINISTIC = (
    T.Compose, T.Resize, T.CenterCrop, T.ToImage, T.ToDtype, T.Normalize, T.ToPureTensor,
    T.PILToTensor, T.Grayscale,
)  # fmt: skip


# ----------------------------------------------------------------- cache keys
def tensors_digest(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Digest of named tensors' values, dtypes and shapes (memory layout does not matter)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def module_digest(module: nn.Module) -> str:
    """Digest of a module's state: every parameter and buffer."""
    return tensors_digest(module.state_dict().items())


def files_digest(samples: Sequence[tuple[str, int]]) -> str:
    """Digest of (path, label, size, mtime) of every sample: edited or moved files change it."""
    h = hashlib.blake2b(digest_size=16)
    for path, label in samples:
        st = os.stat(path)
        # A file name that is not UTF-8 keeps its own bytes (thawkit.textio).
        h.update(f"{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", ERRORS))
    return h.hexdigest()


def cache_key(**parts: Any) -> str:
    """One key over every part that determines the features (order-independent)."""
    text = "\n".join(f"{k}={parts[k]}" for k in sorted(parts))
    return hashlib.blake2b(text.encode("utf-8", ERRORS), digest_size=20).hexdigest()


def is_random(transform: Any) -> bool:
    """Whether a (v2) transform can give different outputs for the same image."""
    if isinstance(transform, T.Compose):
        return any(is_random(t) for t in transform.transforms)
    return not isinstance(transform, _DETERMINISTIC)


# ----------------------------------------------------------------- the store
class FeatureStore:
    """Features and labels by cache key, in memory and optionally on disk.

    Args:
        directory: also keep features in `<directory>/<key>.pt` (reused by later runs with the
            same key); None = memory only.
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self.memory: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.memory or (self.directory is not None and self._file(key).is_file())

    def _file(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.pt"

    def get(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if key in self.memory:
            return self.memory[key]
        if self.directory is not None and self._file(key).is_file():
            saved = torch.load(self._file(key), weights_only=True)
            self.memory[key] = saved["features"], saved["labels"]
            return self.memory[key]
        return None

    def put(self, key: str, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.memory[key] = features, labels
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self._file(key).with_suffix(".tmp")
            torch.save({"features": features, "labels": labels}, tmp)
            os.replace(tmp, self._file(key))
