"""EWC's diagonal Fisher information (transfer/fisher.py): the formula, and inputs it refuses."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from thawkit.finetune.module import FineTuneModule
from thawkit.transfer.fisher import diagonal_fisher, fisher_images
from thawkit.transfer.regularize import source_classifier


def test_fisher_matches_a_per_image_autograd_loop() -> None:
    torch.manual_seed(0)
    module = FineTuneModule(2, "test_efficientnet", "none")
    backbone = module.backbone.model  # frozen (requires_grad=False): torch.func needs no grads
    classifier = source_classifier("test_efficientnet", "none")
    x = torch.randn(5, 3, 32, 32)
    fisher = diagonal_fisher(backbone, classifier, [(x, None)], seed=3, chunk=2)
    # The same labels: sampled from the source model's softmax with the same seed.
    with torch.no_grad():
        probs = torch.softmax(classifier(backbone(x)), -1)
    y = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(3)).squeeze(1)
    expected = {n: torch.zeros_like(p) for n, p in backbone.named_parameters()}
    backbone.requires_grad_(True)
    classifier.requires_grad_(True)
    for i in range(len(x)):
        backbone.zero_grad()
        torch.log_softmax(classifier(backbone(x[i : i + 1])), -1)[0, y[i]].backward()
        for n, p in backbone.named_parameters():
            expected[n] += p.grad**2 / len(x)
    for n in expected:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-4, atol=1e-10)
    assert any(float(f.sum()) > 0 for f in fisher.values())


def test_no_images_and_no_training_split_fail_clearly() -> None:
    module = FineTuneModule(2, "test_efficientnet", "none")
    classifier = source_classifier("test_efficientnet", "none")
    with pytest.raises(ValueError, match="no training images"):
        diagonal_fisher(module.backbone.model, classifier, [])
    with pytest.raises(ValueError, match="training images of a thawkit ImageFolderDataModule"):
        fisher_images(SimpleNamespace(splits={"val": []}), batches=1)
