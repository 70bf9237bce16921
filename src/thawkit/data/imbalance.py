"""Class imbalance: a weighted sampler that every DDP rank draws identically, and loss weights.

Modes (`imbalance=` config group):

- `sampler`: draw training images with replacement, each with probability proportional to
  1 / n_c (`inverse`: classes come out balanced) or 1 / sqrt(n_c) (`sqrt_inverse`: halfway).
- `loss`: weight each class's loss by 1 / n_c (`inverse`) or by the inverse effective number
  of samples (1 - beta) / (1 - beta**n_c) (`effective_number`, Cui et al. 2019).
- `both`: the sampler draws first; the loss weights are then computed from the class
  frequencies *the sampler produces*, not the folder's. Together they correct the imbalance
  once: `sqrt_inverse` draws + `inverse` loss weights balance exactly, instead of the sampler
  and the loss each correcting it in full (which would over-weight the rare classes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from thawkit.config.schema.data import (  # the names the schema allows
    LOSS_WEIGHTINGS,
    SAMPLER_WEIGHTINGS,
)


def class_counts(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Images per class (length `num_classes`)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def _per_class_draw_weight(counts: np.ndarray, method: str) -> np.ndarray:
    if method not in SAMPLER_WEIGHTINGS:
        raise ValueError(
            f"imbalance.sampler_weighting={method!r} is not one of {SAMPLER_WEIGHTINGS}"
        )
    per_class = 1.0 / np.maximum(counts.astype(np.float64), 1.0)
    return np.sqrt(per_class) if method == "sqrt_inverse" else per_class


def sample_weights(
    labels: Sequence[int], counts: np.ndarray, method: str = "inverse"
) -> torch.Tensor:
    """Per-sample draw weights: inverse class frequency, or its square root (milder)."""
    per_class = _per_class_draw_weight(counts, method)
    return torch.as_tensor(per_class[np.asarray(labels, dtype=np.int64)], dtype=torch.float64)


def sampled_class_counts(counts: np.ndarray, method: str = "inverse") -> np.ndarray:
    """Expected images per class in one epoch drawn by the weighted sampler (same total)."""
    mass = counts * _per_class_draw_weight(counts, method)
    return counts.sum() * mass / mass.sum()


def loss_class_weights(
    counts: np.ndarray, method: str = "inverse", beta: float = 0.999
) -> list[float]:
    """Per-class loss weights, normalised to mean 1 over classes.

    `inverse`: 1 / n_c. `effective_number` (Cui et al., 2019): (1 - beta) / (1 - beta**n_c).
    """
    if method not in LOSS_WEIGHTINGS:
        raise ValueError(f"imbalance.loss_weighting={method!r} is not one of {LOSS_WEIGHTINGS}")
    if method == "effective_number" and not 0 < beta < 1:
        raise ValueError(f"imbalance.beta={beta} must be in (0, 1)")
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    w = 1.0 / n if method == "inverse" else (1.0 - beta) / (1.0 - np.power(beta, n))
    return (w / w.mean()).tolist()


class SeededWeightedSampler(Sampler[int]):
    """Weighted random sampling with replacement, seeded by (seed, epoch).

    Every process that builds it with the same seed draws the same sequence in the same epoch,
    so under DDP the ranks shard one identical draw: Lightning wraps a custom sampler in
    `DistributedSamplerWrapper`, which lists this sampler once per epoch on every rank and
    keeps every world_size-th index. The epoch comes from `set_epoch` (Lightning calls it on
    the sampler, and from Lightning 2.6 the wrapper forwards it); where nobody calls it, each
    iteration advances the epoch by one, identically on every rank.

    Args:
        weights: per-sample draw weights (need not sum to 1).
        num_samples: draws per epoch.
        seed: the run's seed; same on every rank.
        epoch: first epoch (a resumed run starts at its epoch, not at 0).
    """

    def __init__(
        self, weights: torch.Tensor, num_samples: int, seed: int = 0, epoch: int = 0
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be >= 1")
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        draw = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g)
        return iter(draw.tolist())

    def __len__(self) -> int:
        return self.num_samples
