"""The sampler of the unlabelled target images (domain adaptation).

The other samplers live with what they serve: the weighted sampler of class imbalance in
`thawkit.data.imbalance`, the position-keyed epoch order in `thawkit.seeding`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from thawkit.seeding import ORDER, derive_seed


class CyclingSampler(Sampler[int]):
    """`num_samples` indices per epoch from back-to-back permutations of `n` items.

    The unlabelled target set gets exactly as many draws per epoch as the source set, whatever
    its size, so turning domain adaptation on changes neither the epoch's length nor the steps
    the LR schedule counts. Seeded by (seed, epoch), like the source order.
    """

    def __init__(self, n: int, num_samples: int, seed: int, epoch: int = 0) -> None:
        self.n, self.num_samples, self.seed, self.epoch = n, num_samples, seed, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order: list[int] = []
        for k in range(math.ceil(self.num_samples / self.n)):
            g = torch.Generator().manual_seed(derive_seed(self.seed, ORDER, self.epoch, k))
            order += torch.randperm(self.n, generator=g).tolist()
        return iter(order[: self.num_samples])

    def __len__(self) -> int:
        return self.num_samples
