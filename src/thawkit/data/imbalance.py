"""Class imbalance: a weighted sampler that every DDP rank draws identically, and loss weights."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

IMBALANCE_MODES = ("none", "sampler", "loss", "both")
SAMPLER_WEIGHTINGS = ("inverse", "sqrt_inverse")
LOSS_WEIGHTINGS = ("inverse", "effective_number")


def class_counts(labels: Sequence[int], num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def loss_class_weights(counts: np.ndarray, method: str = "inverse", beta: float = 0.999) -> list[float]:
    """Per-class loss weights, normalised to mean 1 over classes.

    `inverse`: 1 / n_c. `effective_number` (Cui et al., 2019): (1 - beta) / (1 - beta**n_c).
    """
    if method not in LOSS_WEIGHTINGS:
        raise ValueError(f"imbalance.loss_weighting={method!r} is not one of {LOSS_WEIGHTINGS}")
    n = np.maximum(counts.astype(np.float64), 1.0)
    w = 1.0 / n if method == "inverse" else (1.0 - beta) / (1.0 - np.power(beta, n))
    return (w / w.mean()).tolist()


def sample_weights(labels: Sequence[int], counts: np.ndarray, method: str = "inverse") -> torch.Tensor:
    """Per-sample draw weights: inverse class frequency, or its square root (milder)."""
    if method not in SAMPLER_WEIGHTINGS:
        raise ValueError(f"imbalance.sampler_weighting={method!r} is not one of {SAMPLER_WEIGHTINGS}")
    per_class = 1.0 / np.maximum(counts.astype(np.float64), 1.0)
    if method == "sqrt_inverse":
        per_class = np.sqrt(per_class)
    return torch.as_tensor(per_class[np.asarray(labels)], dtype=torch.float64)


class SeededWeightedSampler(Sampler[int]):
    """Weighted random sampling with replacement, seeded by (seed, epoch).

    Every process that builds it with the same seed draws the same sequence in the same epoch,
    so under DDP the ranks shard one identical draw (Lightning wraps it in a
    `DistributedSamplerWrapper`, which takes every world_size-th index of this sequence).
    """

    def __init__(self, weights: torch.Tensor, num_samples: int, seed: int = 0) -> None:
        self.weights = weights
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        # Lightning calls set_epoch on this sampler, or under DDP only on its wrapper; counting
        # iterations keeps the epochs apart in both cases, identically on every rank.
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        yield from torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist()

    def __len__(self) -> int:
        return self.num_samples
