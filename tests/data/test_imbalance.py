"""Class imbalance: the weighted sampler balances, shards identically across DDP ranks; weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from conftest import make_image_folder
from thawkit.data import ImageFolderDataModule
from thawkit.data.imbalance import (
    SeededWeightedSampler,
    class_counts,
    loss_class_weights,
    sample_weights,
    sampled_class_counts,
)

# 10:1 imbalanced toy labels: 1000 of class 0, 100 of class 1.
LABELS = [0] * 1000 + [1] * 100
TOLERANCE = 0.02  # of the minority share; its binomial std over 22,000 draws is 0.0034


def _sampler(method: str = "inverse", seed: int = 0) -> SeededWeightedSampler:
    counts = class_counts(LABELS, 2)
    return SeededWeightedSampler(sample_weights(LABELS, counts, method), len(LABELS), seed=seed)


def _minority_share(sampler: SeededWeightedSampler, epochs: int = 20) -> float:
    labels = np.asarray(LABELS)
    drawn = np.concatenate([labels[list(sampler)] for _ in range(epochs)])
    return float(drawn.mean())


def test_inverse_frequency_draws_balanced_classes() -> None:
    share = _minority_share(_sampler("inverse"))
    assert abs(share - 0.5) < TOLERANCE, share


def test_sqrt_inverse_draws_halfway() -> None:
    # Class mass n_c / sqrt(n_c) = sqrt(n_c): minority share sqrt(100) / (sqrt(1000) + sqrt(100)).
    expected = 10 / (10 + 1000**0.5)
    share = _minority_share(_sampler("sqrt_inverse"))
    assert abs(share - expected) < TOLERANCE, (share, expected)
    counts = sampled_class_counts(class_counts(LABELS, 2), "sqrt_inverse")
    assert counts.sum() == pytest.approx(1100) and counts[1] / 1100 == pytest.approx(expected)


def test_draws_depend_on_seed_and_epoch_only() -> None:
    a, b, other = _sampler(seed=3), _sampler(seed=3), _sampler(seed=4)
    first = list(a)
    assert first == list(b) and first != list(other)
    assert list(a) != first  # the next epoch draws anew
    a.set_epoch(0)
    assert list(a) == first  # set_epoch(0) replays epoch 0 (a resumed run, any rank)


@pytest.mark.parametrize("forward_set_epoch", [True, False])
def test_two_ranks_draw_the_same_sequence_and_take_disjoint_shards(
    forward_set_epoch: bool,
) -> None:
    """What Lightning does under DDP: wrap the sampler per rank, call set_epoch on the wrapper.

    Lightning 2.6 forwards set_epoch to our sampler; older versions do not, and then our
    sampler's own epoch counter keeps the ranks in step. Both paths are checked.
    """
    n = 1100
    reference = _sampler(seed=7)
    ranks = [
        DistributedSamplerWrapper(_sampler(seed=7), num_replicas=2, rank=r, shuffle=False)
        for r in range(2)
    ]
    epochs = []
    for epoch in range(2):
        full = list(reference)  # the single draw both ranks must shard
        shards = []
        for wrapper in ranks:
            if forward_set_epoch:
                wrapper.set_epoch(epoch)
            else:
                torch.utils.data.DistributedSampler.set_epoch(wrapper, epoch)  # not forwarded
            shards.append(list(wrapper))
        assert [wrapper.dataset._sampler.epoch for wrapper in ranks] == [epoch + 1] * 2
        # Rank r takes positions r, r + 2, ... of the same draw: disjoint and complete.
        assert shards[0] == full[0::2] and shards[1] == full[1::2]
        assert len(shards[0]) == len(shards[1]) == n // 2
        positions = [set(range(r, n, 2)) for r in range(2)]
        assert not positions[0] & positions[1]
        epochs.append(full)
    assert epochs[0] != epochs[1]


def test_loss_weights() -> None:
    counts = np.array([1000, 100])
    inverse = loss_class_weights(counts, "inverse")
    assert np.mean(inverse) == pytest.approx(1.0) and inverse[1] / inverse[0] == pytest.approx(10)
    effective = loss_class_weights(counts, "effective_number", beta=0.999)
    ratio = (1 - 0.999**1000) / (1 - 0.999**100)  # Cui et al.: (1 - b^n) / (1 - b)
    assert effective[1] / effective[0] == pytest.approx(ratio)
    assert 1 < ratio < 10  # milder than inverse frequency
    with pytest.raises(ValueError, match="loss_weighting='median'"):
        loss_class_weights(counts, "median")


def _datamodule(tmp_path: Path, **imbalance) -> ImageFolderDataModule:
    root = tmp_path / "imb"
    if not root.exists():
        make_image_folder(root, (16, 4), ("train", "val"), size=8)
    dm = ImageFolderDataModule(
        root=str(root), preprocessing="test_efficientnet", image_size=8, num_workers=0,
        batch_size=4, imbalance=imbalance,
    )  # fmt: skip
    dm.setup()
    return dm


def test_datamodule_imbalance_modes(tmp_path: Path) -> None:
    none = _datamodule(tmp_path, mode="none")
    assert none.class_weights is None
    assert not isinstance(none.train_dataloader().sampler.inner, SeededWeightedSampler)

    sampler = _datamodule(tmp_path, mode="sampler", sampler_weighting="inverse")
    assert sampler.class_weights is None
    loader = sampler.train_dataloader()
    # The weighted sampler decides the order inside thawkit.seeding's SeededEpochSampler.
    assert isinstance(loader.sampler.inner, SeededWeightedSampler) and len(loader.sampler) == 20

    loss = _datamodule(tmp_path, mode="loss", loss_weighting="inverse")
    assert loss.class_weights == pytest.approx([0.4, 1.6])  # 1/16 : 1/4, mean 1
    assert not isinstance(loss.train_dataloader().sampler.inner, SeededWeightedSampler)

    # both: sqrt-inverse draws give classes 8:4 on average; inverse weights of *those* counts
    # finish the job, so that sampler and loss together balance exactly once.
    both = _datamodule(
        tmp_path, mode="both", sampler_weighting="sqrt_inverse", loss_weighting="inverse"
    )
    assert isinstance(both.train_dataloader().sampler.inner, SeededWeightedSampler)
    w = np.array(both.class_weights)
    drawn = sampled_class_counts(np.array([16, 4]), "sqrt_inverse")
    assert drawn == pytest.approx([40 / 3, 20 / 3])
    assert w == pytest.approx([2 / 3, 4 / 3])
    assert drawn[0] * w[0] == pytest.approx(drawn[1] * w[1])  # balanced loss mass per class

    with pytest.raises(ValueError, match="data.imbalance.mode='oversample'"):
        _datamodule(tmp_path, mode="oversample")
