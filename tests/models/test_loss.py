"""soft_target_cross_entropy against PyTorch's cross-entropy and against its own definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from thawkit.models.loss import as_soft_targets, soft_target_cross_entropy

C = 4


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, C, generator=g) * 3
    labels = torch.randint(0, C, (16,), generator=g)
    weights = torch.tensor([1.0, 3.0, 0.5, 2.0])
    return logits, labels, weights


def test_hard_labels_equal_cross_entropy(batch) -> None:
    logits, labels, weights = batch
    assert torch.allclose(
        soft_target_cross_entropy(logits, labels), F.cross_entropy(logits, labels)
    )
    assert torch.allclose(
        soft_target_cross_entropy(logits, labels, weights),
        F.cross_entropy(logits, labels, weight=weights),
    )
    # Given as one-hot rows, the same numbers.
    one_hot = as_soft_targets(labels, C)
    assert torch.equal(one_hot.argmax(-1), labels) and torch.equal(one_hot.sum(-1), torch.ones(16))
    assert torch.allclose(
        soft_target_cross_entropy(logits, one_hot, weights),
        F.cross_entropy(logits, labels, weight=weights),
    )


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothing_equals_cross_entropy(eps: float, batch) -> None:
    logits, labels, _ = batch
    expected = F.cross_entropy(logits, labels, label_smoothing=eps)
    assert torch.allclose(soft_target_cross_entropy(logits, labels, label_smoothing=eps), expected)


def test_soft_targets_without_weights_equal_cross_entropy_with_probabilities(batch) -> None:
    logits, labels, _ = batch
    mixed = 0.7 * F.one_hot(labels, C) + 0.3 * F.one_hot(labels.roll(1), C).float()
    assert torch.allclose(soft_target_cross_entropy(logits, mixed), F.cross_entropy(logits, mixed))


def _by_definition(logits, targets, weights, eps):
    """The module docstring's definition, one sample at a time."""
    total, norm = 0.0, 0.0
    for z, t in zip(logits, targets, strict=True):
        w_i = float((t * weights).sum())  # weight from the target before smoothing
        t_s = (1 - eps) * t + eps / C
        ce = float(-(t_s * torch.log_softmax(z, -1)).sum())
        total, norm = total + w_i * ce, norm + w_i
    return total / norm


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_class_weights_on_soft_targets_follow_the_definition(eps: float, batch) -> None:
    logits, labels, weights = batch
    lam = torch.linspace(0.2, 0.9, 16)[:, None]  # a Mixup/CutMix-like mix per sample
    mixed = lam * F.one_hot(labels, C) + (1 - lam) * F.one_hot(labels.roll(3), C)
    got = soft_target_cross_entropy(logits, mixed, weights, eps)
    assert float(got) == pytest.approx(_by_definition(logits, mixed, weights, eps), rel=1e-5)
    # The weights do change a soft-target loss, and only through their ratios.
    assert float(got) != pytest.approx(
        float(soft_target_cross_entropy(logits, mixed, None, eps)), rel=1e-3
    )
    assert torch.allclose(got, soft_target_cross_entropy(logits, mixed, 10 * weights, eps))
    assert torch.allclose(
        soft_target_cross_entropy(logits, mixed, torch.full((C,), 2.0), eps),
        soft_target_cross_entropy(logits, mixed, None, eps),
    )


def test_a_mixed_sample_gets_the_mix_of_its_class_weights() -> None:
    # Sample 0 is half class 0 (weight 1), half class 1 (weight 3): weight 2. Sample 1 is
    # class 2 (weight 1). So the loss is (2 * ce_0 + 1 * ce_1) / 3.
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    targets = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    ce = -(targets * torch.log_softmax(logits, -1)).sum(-1)
    got = soft_target_cross_entropy(logits, targets, torch.tensor([1.0, 3.0, 1.0]))
    assert float(got) == pytest.approx(float((2 * ce[0] + ce[1]) / 3))


def test_loss_is_float32_for_half_logits(batch) -> None:
    logits, labels, _ = batch
    got = soft_target_cross_entropy(logits.bfloat16(), labels)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(
        float(F.cross_entropy(logits.bfloat16().float(), labels)), rel=1e-5
    )
