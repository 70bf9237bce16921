"""The feature cache's keys and store: what determines pooled features, and where they are kept.

A key covers everything that determines the features (see `thawkit.data.feature_cache`); the
store holds them by key in memory for the run and, optionally, on disk across runs (the
persistent cache's rows per file are in `thawkit.data.feature_rows`).

Memory stays bounded: the store holds features in RAM up to `budget_mb`
(`callbacks.speed.feature_cache_mb`); a split whose features would go beyond it is written, batch
by batch as the backbone produces it, to a file in a spill folder (`RowWriter`) and served from
there (`SpilledRows`), so a 25k-image folder never holds its features twice, or at all, in
memory. The rows are the same float32 values either way, so training is the same.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset
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
class SpilledRows(Dataset):
    """Feature rows (float32, N x D) in a file, with their labels: item i is (row i, label i).

    The file is memory-mapped for whole-array use (`tensor`), but items are read with `pread`:
    pages of a mapping that were touched count in the process's resident memory until unmapped,
    while a read leaves them to the kernel's page cache, so serving an epoch from the file keeps
    the resident memory at a batch.
    """

    def __init__(self, path: str | os.PathLike, num_rows: int, dim: int, labels: torch.Tensor):
        self.path, self.num_rows, self.dim, self.labels = Path(path), num_rows, dim, labels
        self._row_bytes = dim * 4
        self._fd: int | None = None
        self._fd_pid = -1

    def __len__(self) -> int:
        return self.num_rows

    def __getstate__(self) -> dict[str, Any]:  # a worker process opens its own descriptor
        return {**self.__dict__, "_fd": None, "_fd_pid": -1}

    def _read(self, i: int) -> torch.Tensor:
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd, self._fd_pid = os.open(self.path, os.O_RDONLY), os.getpid()
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row {i} of {self.num_rows}")
        data = os.pread(self._fd, self._row_bytes, i * self._row_bytes)
        return torch.from_numpy(np.frombuffer(data, dtype=np.float32).copy())

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._read(int(i)), self.labels[i]

    def tensor(self) -> torch.Tensor:
        """All rows as one tensor over the mapped file (copy-on-write: the file never changes)."""
        rows = np.memmap(self.path, dtype=np.float32, mode="c", shape=(self.num_rows, self.dim))
        return torch.from_numpy(rows)

    def close(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            os.close(self._fd)
        self._fd = None


class RowWriter:
    """Collects a split's feature rows batch by batch: in memory while the store's budget
    allows, in a spill file from the batch that would go beyond it (`FeatureStore.writer`)."""

    def __init__(self, store: FeatureStore, key: str) -> None:
        self.store, self.key = store, key
        self.batches: list[torch.Tensor] = []
        self.nbytes = 0
        self.num_rows = 0
        self.dim: int | None = None
        self.path: Path | None = None
        self._file: Any = None

    def add(self, rows: torch.Tensor) -> None:
        """Append rows (B x D); they are stored as float32."""
        rows = rows.detach().to("cpu", torch.float32).contiguous()
        if self.dim is None:
            self.dim = rows.shape[1]
        if rows.shape[1:] != (self.dim,):
            raise ValueError(f"feature rows of shape {tuple(rows.shape)}, expected (B, {self.dim})")
        self.num_rows += len(rows)
        if self._file is None and self.store.fits(self.nbytes + rows.nbytes):
            self.batches.append(rows)
            self.nbytes += rows.nbytes
            return
        if self._file is None:  # beyond the budget: everything so far goes to the file
            self.path = self.store.spill_path(self.key)
            self._file = open(self.path, "wb")  # noqa: SIM115 (closed in `finish`)
            for held in self.batches:
                self._file.write(held.numpy().tobytes())
            self.batches, self.nbytes = [], 0
        self._file.write(rows.numpy().tobytes())

    def finish(self, labels: torch.Tensor) -> Dataset:
        """Store the rows under the key; the dataset of (row, label) items that serves them."""
        if self._file is None:
            dim = self.dim or 0
            features = torch.cat(self.batches) if self.batches else torch.empty(0, dim)
            self.batches = []
            self.store.put(self.key, features, labels)
            return TensorDataset(features, labels)
        self._file.close()
        assert self.path is not None and self.dim is not None
        rows = SpilledRows(self.path, self.num_rows, self.dim, labels)
        self.store.spilled[self.key] = rows
        return rows


def rows_tensor(items: Dataset) -> torch.Tensor:
    """The feature rows of a store's dataset (`FeatureStore.dataset`) as one N x D tensor."""
    if isinstance(items, SpilledRows):
        return items.tensor()
    if isinstance(items, TensorDataset):
        return items.tensors[0]
    raise TypeError(f"not a feature store's dataset: {type(items).__name__}")


class FeatureStore:
    """Features and labels by cache key, in memory up to a budget and optionally on disk.

    Args:
        directory: also keep features in `<directory>/<key>.pt` (reused by later runs with the
            same key); None = memory only.
        budget_mb: memory the features held by key may take; a split that would go beyond it
            is spilled to a file under `spill_root` (`writer`). None = no limit.
        spill_root: where the spill folder is made (the run dir); None = the system's temp dir.
            The folder is removed by `close`, and at the latest when the process exits.
    """

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        budget_mb: float | None = None,
        spill_root: str | os.PathLike | None = None,
    ) -> None:
        if budget_mb is not None and budget_mb < 0:
            raise ValueError(f"callbacks.speed.feature_cache_mb={budget_mb} must be >= 0")
        self.directory = Path(directory).expanduser() if directory else None
        self.memory: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.budget_bytes = None if budget_mb is None else int(budget_mb * 2**20)
        self.spill_root = spill_root
        self.spilled: dict[str, SpilledRows] = {}
        self._spill_dir: tempfile.TemporaryDirectory | None = None

    def __contains__(self, key: str) -> bool:
        return (
            key in self.memory
            or key in self.spilled
            or (self.directory is not None and self._file(key).is_file())
        )

    def _file(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.pt"

    @property
    def memory_bytes(self) -> int:
        """Bytes of the features held in memory."""
        return sum(f.nbytes + y.nbytes for f, y in self.memory.values())

    def fits(self, nbytes: int) -> bool:
        """Whether `nbytes` more features stay within the memory budget."""
        return self.budget_bytes is None or self.memory_bytes + nbytes <= self.budget_bytes

    def spill_path(self, key: str) -> Path:
        """A new file for the rows of `key` in this store's spill folder."""
        if self._spill_dir is None:
            root = self.spill_root
            if root is not None:
                Path(root).mkdir(parents=True, exist_ok=True)
            # TemporaryDirectory removes itself when closed, collected or at interpreter exit.
            self._spill_dir = tempfile.TemporaryDirectory(prefix="feature-spill-", dir=root)
        return Path(self._spill_dir.name) / f"{key}.f32"

    def writer(self, key: str) -> RowWriter:
        """Where a split's features go as they are extracted (`RowWriter.finish` stores them)."""
        return RowWriter(self, key)

    def dataset(self, key: str) -> Dataset | None:
        """The (row, label) items stored under `key`, in memory or spilled; None if absent."""
        if key in self.spilled:
            return self.spilled[key]
        found = self.get(key)
        return None if found is None else TensorDataset(*found)

    def close(self) -> None:
        """Forget the spilled features and remove their folder (memory entries stay)."""
        for rows in self.spilled.values():
            rows.close()
        self.spilled.clear()
        if self._spill_dir is not None:
            try:
                self._spill_dir.cleanup()
            except OSError:  # already gone: nothing left to remove
                pass
            self._spill_dir = None

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
