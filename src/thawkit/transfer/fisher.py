"""The diagonal Fisher information of a source model, estimated on target images (for EWC).

The source data is not available, so F is estimated on the target training images: for each
image a label is sampled from the source model's own softmax and the squared per-image gradient
of its log-probability is averaged. With sampled labels this is the true Fisher (an unbiased
Monte Carlo estimate of it), not the "empirical Fisher", which would use true labels: the target
labels are not the source classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, Subset

from thawkit.data.datasets import ImageDataset
from thawkit.data.transforms import eval_transform


def fisher_images(datamodule: Any, batches: int, seed: int = 0) -> DataLoader:
    """A loader of `batches` batches of target training images with the evaluation transform.

    Raises:
        ValueError: the data module has no training split (not a thawkit ImageFolderDataModule).
    """
    splits = getattr(datamodule, "splits", None)
    if not splits or "train" not in splits:
        raise ValueError(
            "EWC estimates its Fisher information on the training images of a thawkit "
            "ImageFolderDataModule (its `splits`); this data module has none."
        )
    dataset = ImageDataset(
        splits["train"],
        eval_transform(datamodule.preprocessing, datamodule.image_size),
        getattr(datamodule, "image_cache", None),
    )
    batch_size = int(getattr(datamodule, "batch_size", 32))
    n = min(len(dataset), batches * batch_size)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return DataLoader(Subset(dataset, order[:n].tolist()), batch_size=batch_size)


def diagonal_fisher(
    backbone: nn.Module,
    classifier: nn.Module,
    images: Iterable[Any],
    seed: int = 0,
    chunk: int = 16,
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information of `classifier(backbone(x))` w.r.t. the backbone parameters.

    F_i = mean over images x of (d log p(y|x) / d w_i)^2 with y ~ p(.|x) sampled once per image
    (the true Fisher, Monte Carlo). Per-image gradients (torch.func.vmap), evaluation mode
    (BatchNorm uses its running statistics, as in the source model's inference).

    Args:
        backbone: the feature extractor (its parameters are the ones returned).
        classifier: maps pooled features to the source classes' logits.
        images: batches `(x, ...)` or tensors of images.
        seed: seed of the sampled labels.
        chunk: images per vmap call (bounds the memory of per-image gradients).

    Raises:
        ValueError: `images` holds no image.
    """
    backbone.eval()
    classifier.eval().requires_grad_(False)  # the Fisher must carry no autograd graph
    device = next(backbone.parameters()).device
    params = {n: p.detach() for n, p in backbone.named_parameters()}
    buffers = dict(backbone.named_buffers())

    def log_prob(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        features = functional_call(backbone, (p, buffers), (x.unsqueeze(0),))
        log_probs = torch.log_softmax(classifier(features), dim=-1)[0]
        return log_probs.gather(0, y.unsqueeze(0)).squeeze(0)  # vmap: no indexing by a tensor

    per_image = vmap(grad(log_prob), in_dims=(None, 0, 0))
    generator = torch.Generator().manual_seed(seed)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for batch in images:
        x = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(device)
        with torch.no_grad():
            probs = torch.softmax(classifier(backbone(x)), dim=-1).float().cpu()
        y = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
        for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True):
            grads = per_image(params, xs, ys)
            for n, g in grads.items():
                total[n] += g.pow(2).sum(0)
        count += len(x)
    if count == 0:
        raise ValueError("EWC: no training images to estimate the Fisher information on")
    return {n: (t / count).detach() for n, t in total.items()}
