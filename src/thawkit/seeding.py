"""Counter-based randomness: every random draw of a run is a function of (seed, what, where).

A resumed run must draw exactly the random numbers the uninterrupted run would have drawn. With
one global RNG stream that is fragile: the data loader prefetches (and augments) the next batch
before the current step, a new loader iterator draws a seed, workers have their own streams,
and a checkpoint written at a batch boundary cannot say which of these draws already happened.
So thawkit keys each consumer of randomness by its position instead of by history:

| consumer                         | seeded by                                   |
|----------------------------------|---------------------------------------------|
| training order (shuffle/sampler) | (seed, epoch)                                |
| augmentation of one image        | (seed, epoch, position in the epoch's order) |
| Mixup/CutMix of one batch        | (seed, epoch, batch index, rank)             |
| dropout etc. in a training step  | (seed, epoch, batch index, rank)             |

Nothing needs saving beyond the epoch and batch counters that Lightning checkpoints anyway, a
run resumed mid-epoch skips exactly the batches it already trained on, and the number of
DataLoader workers no longer changes the result.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from thawkit.compat import (
    batch_being_prepared,
    batches_done_on_resume,
    epochs_processed,
    restart_training_fetcher,
)

# Stream ids: one per consumer, so no two consumers ever share a seed.
AUGMENT, MIX, STEP, ORDER = 1, 2, 3, 4

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part and their order (splitmix64 chaining)."""
    h = 0
    for part in parts:
        h = _splitmix64(h ^ (int(part) & _MASK64))
    return h >> 1


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with the CPU torch RNG seeded by `seed`, leaving the global stream untouched."""
    with torch.random.fork_rng(devices=[]):
        # The CPU generator alone: torch.manual_seed would also (lazily) seed CUDA, which costs
        # ~85 us per call (it records a stack trace) against ~1 us, once per image per epoch.
        torch.default_generator.manual_seed(seed)
        yield


@contextlib.contextmanager
def kept_random_state() -> Iterator[None]:
    """Run the body and put Python's, NumPy's and torch's CPU random streams back as they were:
    work done before a run (strategy=auto's probe and race) leaves the run's draws (its head's
    initialisation among them) as they would have been without it."""
    state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.random.set_rng_state(state[2])


def seed_step(seed: int) -> None:
    """Seed every global RNG (torch CPU and CUDA, numpy, random) for one training step."""
    # torch.manual_seed would also queue a seed for every accelerator not started yet (CUDA,
    # XPU, MTIA), recording a stack trace for each: ~0.1 ms a step, most of a head-only step's
    # seeding (docs/architecture.md, "Epochs on cached features"). A device that is not started
    # draws no numbers in the step; the ones thawkit trains on (CUDA, MPS) are seeded when in use,
    # as torch.manual_seed seeds them.
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    if torch.backends.mps.is_available():
        torch.mps.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def resolve_seed(seed: int | None) -> int:
    """The run's seed, or a random one when none is set (then runs are not reproducible)."""
    return int(seed) if seed is not None else random.SystemRandom().getrandbits(32)


class SeededEpochSampler(Sampler[tuple[int, int]]):
    """Training order seeded by (seed, epoch), a seed for each drawn image, resumable mid-epoch.

    Yields `(index, augmentation_seed)` pairs for `SeededSamples`. The order is a permutation of
    the dataset seeded by (seed, epoch), or, with `inner`, that sampler's order (it must itself
    be seeded by epoch, as `SeededWeightedSampler` is). Lightning calls `set_epoch` every epoch
    (and forwards it through its DDP wrapper).

    Args:
        num_samples: dataset length (used when there is no `inner` sampler).
        seed: the run's seed.
        epoch: the epoch the first iteration draws (a resumed run starts at its epoch).
        inner: a sampler that decides the order instead of a permutation.
        skip: called at each iteration: how many positions to leave out, i.e. the images a
            run resumed mid-epoch already trained on (the `__len__` stays the full epoch, as
            Lightning counts the epoch's batches from the checkpoint). Called lazily because
            Lightning builds the loader before it restores its loop counters.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        epoch: int = 0,
        inner: Sampler[int] | None = None,
        skip: Callable[[], int] | None = None,
    ) -> None:
        self.num_samples = len(inner) if inner is not None else num_samples  # type: ignore[arg-type]
        self.seed = seed
        self.epoch = epoch
        self.inner = inner
        self.skip = skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.inner is not None and hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def order(self, epoch: int) -> list[int]:
        """The indices of `epoch`, in training order."""
        if self.inner is not None:
            if hasattr(self.inner, "set_epoch"):
                self.inner.set_epoch(epoch)
            return list(self.inner)
        g = torch.Generator().manual_seed(derive_seed(self.seed, ORDER, epoch))
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = self.epoch, self.skip() if self.skip is not None else 0
        self.epoch += 1  # where nobody calls set_epoch, the next iteration is the next epoch
        order = self.order(epoch)
        for position in range(skip, len(order)):
            yield order[position], derive_seed(self.seed, AUGMENT, epoch, position)

    def __len__(self) -> int:
        return self.num_samples


class SeededSamples(Dataset):
    """Wraps a dataset so that `dataset[(index, seed)]` transforms that image under its own seed."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    # What keys and rebuilds the data (the feature cache reads these) is the wrapped dataset's.
    @property
    def samples(self) -> Any:
        return getattr(self.dataset, "samples", None)

    @property
    def transform(self) -> Any:
        return getattr(self.dataset, "transform", None)

    @property
    def images(self) -> Any:
        return getattr(self.dataset, "images", None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int] | int) -> Any:
        if isinstance(item, int):  # plain indices (evaluation): no augmentation to seed
            return self.dataset[item]
        index, seed = item
        with seeded(seed):
            return self.dataset[index]


def batches_done_in_epoch(trainer: L.Trainer | None) -> int:
    """Training batches already done in the current epoch when resuming mid-epoch, else 0.

    Valid while the train dataloader is being built: Lightning restores its loop counters from
    the checkpoint before it asks for the loader. One device only (see below).
    """
    if trainer is None or getattr(trainer, "fit_loop", None) is None or trainer.world_size > 1:
        # Under DDP, Lightning's sampler wrapper shards after this sampler: a skip here would
        # shift the shards. A mid-epoch resume there re-reads the epoch from its start.
        return 0
    return batches_done_on_resume(trainer)


def batch_position(trainer: L.Trainer) -> tuple[int, int, int]:
    """(epoch, index of the batch being prepared in its epoch, global rank) during training."""
    # fit_loop is absent on stand-in trainers of unit tests.
    index = batch_being_prepared(trainer) if getattr(trainer, "fit_loop", None) else 0
    return trainer.current_epoch, index, getattr(trainer, "global_rank", 0)


def restart_train_iterator(trainer: L.Trainer) -> None:
    """Start the training iterator afresh, for the restored epoch and position.

    Lightning creates the training iterator while it estimates the run's steps (for the LR
    schedule), before it restores the checkpoint's epoch and batch counters, and a resumed run
    keeps that iterator. With workers, the sampler has then already drawn its order for epoch
    0 from the start. Called at `on_train_start`, after the restore.
    """
    restart_training_fetcher(trainer, epochs_processed(trainer))


class StepSeeds(L.Callback):
    """Seeds the global RNGs before every training step by (seed, epoch, batch, rank).

    Dropout, stochastic depth and anything else random inside a step then draw the same numbers
    in a resumed run as in the uninterrupted one, whatever happened before the step.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None:
            restart_train_iterator(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        seed_step(
            derive_seed(self.seed, STEP, trainer.current_epoch, batch_idx, trainer.global_rank)
        )

    def state_dict(self) -> dict[str, Any]:
        # A run without a seed drew one at random: a resumed run must keep it.
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed = int(state_dict["seed"])
