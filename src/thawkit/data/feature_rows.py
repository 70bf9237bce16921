"""Pooled features one row per file: the extraction pass, and the persistent cache's entries.

The persistent cache (`thawkit.data.disk_cache`) keeps a split's features as rows, one per file
by its identity, under a key over everything but the files (`thawkit.data.feature_cache`): a
changed or added file misses its own row only, and a later run extracts just those. For that a
row must not depend on the other files extracted with it: in evaluation mode a frozen backbone
treats every image alone, and with augmentation each image draws from a seed of its own
(`ViewItems`).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from rich.progress import track
from torch import nn
from torch.utils.data import DataLoader, Dataset

from thawkit.data.disk_cache import DiskCache
from thawkit.seeding import derive_seed, seeded


class ViewItems(Dataset):
    """A dataset whose item i is augmented under a seed of its own (the view's seed, its path)."""

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        path = str(self.dataset.samples[i][0]).encode("utf-8", "surrogateescape")
        with seeded(derive_seed(self.seed, zlib.crc32(path))):
            return self.dataset[i]


@torch.no_grad()  # wraps each resumption of the generator: the caller's grad mode is its own
def feature_batches(
    backbone: nn.Module,
    dataset: Any,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    forward_context: Any = None,
    progress: str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Pooled features (B x D, float32, CPU) and labels of `dataset`, batch by batch, in order.

    The caller puts the backbone in eval mode (and restores its mode afterwards). `progress`:
    the description of a progress bar over the batches (None: no bar).
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    batches = track(loader, description=progress or "", disable=progress is None, transient=True)
    # The forward context (autocast) is one-shot, so it stays entered across the yields; the
    # consumers (`extract_features`, `FeatureCache`) only copy the float32 rows meanwhile.
    with forward_context if forward_context is not None else nullcontext():
        for x, y in batches:
            yield backbone(x.to(device, non_blocking=True)).float().cpu(), torch.as_tensor(y)


def extract_features(
    backbone: nn.Module,
    dataset: Any,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    forward_context: Any = None,
    progress: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (N x D, float32, CPU) and labels of every item of `dataset`, in order
    (`feature_batches`, gathered)."""
    batches = feature_batches(
        backbone, dataset, batch_size, device, num_workers, forward_context, progress
    )
    features, labels = zip(*batches, strict=True)
    return torch.cat(features), torch.cat(labels)


def in_dataset_order(
    ids: Sequence[str],
    rows: dict[str, torch.Tensor],
    todo: Sequence[int],
    fresh: Iterable[tuple[torch.Tensor, torch.Tensor]],
    chunk: int = 256,
) -> Iterator[torch.Tensor]:
    """A split's feature rows in the dataset's order, in chunks: the `rows` read back (by file
    identity `ids[i]`) where item i is not in `todo`, the next `fresh` batch's rows where it is.

    Without rows read back, the fresh batches pass through as they are.
    """
    if not rows:
        yield from (features for features, _ in fresh)
        return
    batches = iter(fresh)
    pending: Iterator[torch.Tensor] = iter(())  # the fresh rows of the batch being placed
    needed = set(todo)
    held: list[torch.Tensor] = []
    for i, name in enumerate(ids):
        if i in needed:
            row = next(pending, None)
            if row is None:
                pending = iter(next(batches)[0])
                row = next(pending)
        else:
            row = rows[name]
        held.append(row)
        if len(held) == chunk:
            yield torch.stack(held)
            held = []
    if held:
        yield torch.stack(held)


def load_rows(disk: DiskCache, key: str, ids: Sequence[str]) -> dict[str, torch.Tensor]:
    """{file identity: feature row} of the persistent entry `key`, for the `ids` it holds."""
    payload = disk.read("features", key)
    if payload is None:
        return {}
    try:
        saved = torch.load(io.BytesIO(payload), weights_only=True)
        features, saved_ids = saved["features"], saved["ids"]
        if len(saved_ids) != len(features):
            raise ValueError(f"{len(saved_ids)} file names for {len(features)} rows")
    except Exception as e:  # torch.load raises many types for bytes it cannot read
        disk.corrupt("features", key, f"unreadable features: {e}")
        return {}
    where = {name: i for i, name in enumerate(saved_ids)}
    return {name: features[where[name]] for name in ids if name in where}


def save_rows(disk: DiskCache, key: str, ids: Sequence[str], features: torch.Tensor) -> None:
    """Store one feature row per file identity as the persistent entry `key`."""
    buffer = io.BytesIO()
    torch.save({"ids": list(ids), "features": features.contiguous()}, buffer)
    disk.write("features", key, buffer.getvalue())
