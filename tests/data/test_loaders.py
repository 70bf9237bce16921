"""The one DataLoader builder and the position-keyed training loader (no trainer needed)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import Dataset

from thawkit.data.loaders import build_loader, drops_last_single, training_loader
from thawkit.data.samplers import CyclingSampler


class Numbers(Dataset):
    """Item i is (a random number drawn under the item's seed, i)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.rand(()), i


def _epoch(loader) -> tuple[list[int], list[float]]:
    indices, draws = [], []
    for x, y in loader:
        indices += y.tolist()
        draws += x.tolist()
    return indices, draws


@pytest.mark.parametrize(
    ("n", "world", "batch", "drops"),
    [(21, 1, 5, True), (20, 1, 5, False), (22, 1, 5, False), (1, 1, 1, False),
     (41, 2, 5, True), (40, 2, 5, False), (42, 2, 5, True), (6, 1, 1, False)],
)  # fmt: skip
def test_a_last_batch_of_one_is_dropped_on_every_rank(n, world, batch, drops) -> None:
    assert drops_last_single(n, world, batch) is drops


def test_training_loader_visits_each_index_once_in_a_seeded_order() -> None:
    loader = training_loader(Numbers(21), 21, seed=3, trainer=None, batch_size=5, num_workers=0)
    assert loader.drop_last and len(loader) == 4  # 21 = 4 x 5 + a batch of one
    indices, draws = _epoch(loader)
    assert len(indices) == len(set(indices)) == 20 and set(indices) <= set(range(21))
    assert indices != sorted(indices)
    again = training_loader(Numbers(21), 21, seed=3, trainer=None, batch_size=5, num_workers=0)
    assert _epoch(again) == (indices, draws)  # order and per-item randomness both repeat
    other, _ = _epoch(training_loader(Numbers(21), 21, 4, None, 5, 0))
    assert other != indices


def test_training_loader_follows_a_cycling_sampler() -> None:
    cycle = CyclingSampler(n=3, num_samples=10, seed=0)
    loader = training_loader(Numbers(3), 10, 0, None, batch_size=4, num_workers=0, draws=cycle)
    indices, _ = _epoch(loader)
    assert len(indices) == 10 and not loader.drop_last
    counts = Counter(indices)
    assert set(counts) == {0, 1, 2} and min(counts.values()) >= 3  # back-to-back permutations


def test_cycling_sampler_is_seeded_by_epoch() -> None:
    first = list(CyclingSampler(5, 12, seed=1, epoch=0))
    assert first == list(CyclingSampler(5, 12, seed=1, epoch=0))
    for k in range(2):  # each full block of 5 is a permutation
        assert sorted(first[5 * k : 5 * k + 5]) == list(range(5))
    later = CyclingSampler(5, 12, seed=1)
    later.set_epoch(1)
    assert list(later) != first and len(later) == 12


def test_build_loader_settings() -> None:
    plain = build_loader(Numbers(4), batch_size=2, num_workers=0)
    assert not plain.persistent_workers and plain.worker_init_fn is None
    assert plain.pin_memory == torch.cuda.is_available()
    workers = build_loader(Numbers(4), batch_size=2, num_workers=2, drop_last=True)
    assert workers.persistent_workers and workers.worker_init_fn is not None
    assert workers.drop_last and workers.batch_size == 2
