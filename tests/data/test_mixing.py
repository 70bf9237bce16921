"""Mixup/CutMix soft targets, and how class weights and label smoothing apply to them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import make_image_folder
from thawkit.data import ImageFolderDataModule
from thawkit.data.mixing import MIX_MODES, BatchMixer
from thawkit.models.loss import soft_target_cross_entropy


def _flat_batch(n: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample i is a flat image of value i + 1 with class i: pixels tell where they came from."""
    values = torch.arange(1, n + 1, dtype=torch.float32)
    return values[:, None, None, None].expand(n, 3, size, size).clone(), torch.arange(n)


@pytest.mark.parametrize("mode", MIX_MODES)
@pytest.mark.parametrize("batch", [1, 2, 5, 7])
def test_targets_are_distributions(mode: str, batch: int) -> None:
    torch.manual_seed(0)
    mixer = BatchMixer(mode, num_classes=7)
    for _ in range(10):
        images, labels = _flat_batch(batch)
        mixed, targets = mixer(images, labels)
        assert mixed.shape == images.shape and targets.shape == (batch, 7)
        assert torch.allclose(targets.sum(1), torch.ones(batch))
        assert (targets >= 0).all()
        if batch == 1 or mode == "none":  # nothing to mix with: one-hot targets
            assert torch.equal(targets, F.one_hot(labels, 7).float())


def test_cutmix_label_weight_is_the_pasted_area() -> None:
    torch.manual_seed(1)
    mixer = BatchMixer("cutmix", num_classes=5, cutmix_alpha=1.0)
    seen = set()
    for _ in range(30):
        images, labels = _flat_batch(5, size=24)  # odd batch size
        mixed, targets = mixer(images, labels)
        for i in range(5):
            partner = (i - 1) % 5  # torchvision pairs each sample with the previous one
            own = (mixed[i] == i + 1).float().mean()
            pasted = (mixed[i] == partner + 1).float().mean()
            assert own + pasted == pytest.approx(1.0)
            assert targets[i, i] == pytest.approx(own.item(), abs=1e-6)
            assert targets[i, partner] == pytest.approx(pasted.item(), abs=1e-6)
            seen.add(round(pasted.item(), 3))
    assert len(seen) > 10  # the box size really varies


def test_mixup_label_weight_is_the_pixel_blend() -> None:
    torch.manual_seed(2)
    mixer = BatchMixer("mixup", num_classes=5, mixup_alpha=0.4)
    images, labels = _flat_batch(5)
    mixed, targets = mixer(images, labels)
    for i in range(5):
        partner = (i - 1) % 5
        lam = (mixed[i, 0, 0, 0] - (partner + 1)) / ((i + 1) - (partner + 1))
        assert targets[i, i] == pytest.approx(lam.item(), abs=1e-5)
        assert targets[i, partner] == pytest.approx(1 - lam.item(), abs=1e-5)


def test_mixup_cutmix_switch_probability() -> None:
    torch.manual_seed(3)
    images, labels = _flat_batch(4, size=16)

    def is_cutmix(mixer: BatchMixer) -> bool:
        mixed, _ = mixer(images, labels)
        return bool((mixed == mixed.round()).all())  # CutMix copies pixels, Mixup blends

    always_cut = BatchMixer("mixup_cutmix", num_classes=4, switch_prob=1.0)
    never_cut = BatchMixer("mixup_cutmix", num_classes=4, switch_prob=0.0)
    assert all(is_cutmix(always_cut) for _ in range(10))
    assert not any(is_cutmix(never_cut) for _ in range(10))
    half = BatchMixer("mixup_cutmix", num_classes=4, switch_prob=0.5)
    assert 30 < sum(is_cutmix(half) for _ in range(100)) < 70


def test_apply_probability_and_last_epochs_off() -> None:
    torch.manual_seed(4)
    images, labels = _flat_batch(4)
    never = BatchMixer("mixup", num_classes=4, prob=0.0)
    assert torch.equal(never(images, labels)[0], images)
    mixer = BatchMixer("cutmix", num_classes=4, off_last_epochs=2)
    assert [mixer.active(e, 5) for e in range(5)] == [True, True, True, False, False]
    assert not BatchMixer("none").active(0, 5)
    with pytest.raises(ValueError, match="data.mix.mode='blend'"):
        BatchMixer("blend")
    with pytest.raises(ValueError, match="mixup_alpha"):
        BatchMixer("mixup", mixup_alpha=0.0)


def test_class_weights_apply_to_soft_targets_as_documented() -> None:
    """Loss = sum_i w_i CE(p_i, t'_i) / sum_i w_i, with w_i = sum_c t_ic w_c (models/loss.py)."""
    torch.manual_seed(5)
    mixer = BatchMixer("mixup_cutmix", num_classes=3)
    images = torch.rand(7, 3, 8, 8)  # odd batch size
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    _, targets = mixer(images, labels)
    logits = torch.randn(7, 3)
    weights = torch.tensor([0.4, 1.0, 1.6])
    for eps in (0.0, 0.1):
        smoothed = targets * (1 - eps) + eps / 3
        per_sample = -(smoothed * logits.log_softmax(-1)).sum(-1)
        w = targets @ weights  # the mix of each sample's two classes' weights
        expected = (w * per_sample).sum() / w.sum()
        loss = soft_target_cross_entropy(logits, targets, weights, label_smoothing=eps)
        assert loss == pytest.approx(expected.item(), rel=1e-6)
        unweighted = soft_target_cross_entropy(logits, targets, None, label_smoothing=eps)
        assert unweighted == pytest.approx(per_sample.mean().item(), rel=1e-6)
        assert abs(loss - unweighted) > 1e-3  # the weights change the loss
    # With hard labels and no smoothing, it is PyTorch's weighted cross-entropy.
    hard = soft_target_cross_entropy(logits, labels, weights)
    assert hard == pytest.approx(F.cross_entropy(logits, labels, weight=weights).item(), rel=1e-6)


def _datamodule(tmp_path: Path, counts: tuple[int, int], **kwargs) -> ImageFolderDataModule:
    root = make_image_folder(tmp_path / f"images{sum(counts)}", counts, ("train", "val"))
    dm = ImageFolderDataModule(
        root=str(root), preprocessing="test_efficientnet", image_size=16, num_workers=0, **kwargs
    )
    dm.setup()
    return dm


def test_datamodule_mixes_training_batches_only(tmp_path: Path) -> None:
    mix = {"mode": "cutmix", "off_last_epochs": 1}
    dm = _datamodule(tmp_path, (6, 6), batch_size=5, mix=mix)
    batch = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=True, current_epoch=0, max_epochs=3)
    x, y = dm.on_after_batch_transfer(batch, 0)
    assert y.shape == (5, 2) and torch.allclose(y.sum(1), torch.ones(5))
    dm.trainer = SimpleNamespace(training=True, current_epoch=2, max_epochs=3)  # last epoch
    assert dm.on_after_batch_transfer(batch, 0)[1].shape == (5,)
    dm.trainer = SimpleNamespace(training=False, current_epoch=0, max_epochs=3)  # validation
    assert dm.on_after_batch_transfer(batch, 0)[1].shape == (5,)


@pytest.mark.parametrize(("counts", "drop"), [((6, 5), True), ((6, 6), False), ((3, 4), False)])
def test_no_training_batch_of_one(tmp_path: Path, counts: tuple[int, int], drop: bool) -> None:
    dm = _datamodule(tmp_path, counts, batch_size=5)
    sizes = [len(y) for _, y in dm.train_dataloader()]
    assert dm.train_dataloader().drop_last is drop
    assert 1 not in sizes and sum(sizes) == sum(counts) - (1 if drop else 0)
    # Under DDP each rank gets ceil(n / world_size) images: the check is per rank.
    dm.trainer = SimpleNamespace(world_size=2, current_epoch=0)
    per_rank = -(-sum(counts) // 2)
    assert dm.train_dataloader().drop_last is (per_rank % 5 == 1)
