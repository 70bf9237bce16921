"""The one DataLoader builder, and the position-keyed training loader built on it.

Every loader of the data module (train, val, test, the target images of domain adaptation)
comes from `build_loader`, so they share the machine's settings: workers of one torch thread
each, kept alive between epochs, pinned memory only with a GPU.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from thawkit.seeding import SeededEpochSampler, SeededSamples, batches_done_in_epoch

# With a GPU the training process hardly uses the CPU: the workers may take every core but one.
MAX_GPU_WORKERS = 16


def default_num_workers(gpu: bool | None = None) -> int:
    """Leave one core to the training process; at most 4 workers on CPU, 16 with a GPU.

    On a CPU the workers compete with the training process's own threads (4 was fastest on a
    2-core machine, docs/benchmarks.md); with a GPU (`gpu=None`: one is present) decoding and
    augmentation are what the GPU waits for.
    """
    gpu = torch.cuda.is_available() if gpu is None else gpu
    return max(0, min(MAX_GPU_WORKERS if gpu else 4, (os.cpu_count() or 1) - 1))


def _one_thread_per_worker(_: int) -> None:
    # Workers and the main process would otherwise each start a full set of torch threads.
    torch.set_num_threads(1)


def build_loader(
    dataset: Any,
    batch_size: int,
    num_workers: int,
    sampler: Sampler | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with the machine's settings (see the module docstring)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=_one_thread_per_worker if num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
    )


def drops_last_single(num_samples: int, world_size: int, batch_size: int) -> bool:
    """Whether a training epoch of `num_samples` ends in a batch of one sample on a rank.

    Such a batch has no batch statistics (BatchNorm fails on it), so it is dropped. Under DDP
    each rank gets ceil(num_samples / world_size) samples.
    """
    per_rank = math.ceil(num_samples / world_size)
    return per_rank > 1 and per_rank % batch_size == 1


def current_epoch(trainer: L.Trainer | None) -> int:
    """The epoch a loader is built for (0 outside a fit)."""
    return trainer.current_epoch if trainer is not None else 0


def training_loader(
    dataset: Dataset,
    num_samples: int,
    seed: int,
    trainer: L.Trainer | None,
    batch_size: int,
    num_workers: int,
    draws: Sampler[int] | None = None,
) -> DataLoader:
    """A training loader whose order and augmentation are keyed by (seed, epoch, position).

    A resumed run continues the epoch exactly, whatever the worker count (thawkit.seeding).

    Args:
        dataset: the images (indexed by what `draws` yields, or by 0..num_samples-1).
        num_samples: samples per epoch.
        seed: seed of the order and of the augmentation.
        trainer: the fit's trainer (epoch, batches already done, world size); None outside.
        batch_size, num_workers: as `build_loader`.
        draws: a sampler that decides the order instead of a seeded permutation (the weighted
            sampler of class imbalance, the target images' cycling sampler); it must itself be
            seeded by epoch.
    """

    def skip() -> int:
        return batches_done_in_epoch(trainer) * batch_size

    sampler = SeededEpochSampler(num_samples, seed, current_epoch(trainer), draws, skip)
    world = trainer.world_size if trainer is not None else 1
    drop_last = drops_last_single(num_samples, world, batch_size)
    return build_loader(SeededSamples(dataset), batch_size, num_workers, sampler, drop_last)
