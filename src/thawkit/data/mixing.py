"""Mixup and CutMix on whole batches, producing soft targets (torchvision.transforms.v2).

torchvision's CutMix sets the label weight to the pasted box's area (after clipping the box to
the image), so soft targets always describe the pixels. A batch that is not mixed (apply
probability, the last `off_last_epochs` epochs, a batch of one) still gets one-hot soft
targets, so the loss sees one target format for the whole run. The loss
(`thawkit.models.loss.soft_target_cross_entropy`) applies label smoothing and class weights to these
soft targets: a mixed sample's weight is the mix of its two classes' weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2 as T

MIX_MODES = ("none", "mixup", "cutmix", "mixup_cutmix")


class BatchMixer:
    """Mix a batch (images, class indices) into (images, soft targets).

    Args:
        mode: `none`, `mixup`, `cutmix` or `mixup_cutmix`.
        num_classes: number of classes.
        mixup_alpha, cutmix_alpha: Beta(alpha, alpha) parameters of the mixing ratio.
        prob: probability that a batch is mixed at all.
        switch_prob: with `mixup_cutmix`, probability of CutMix instead of Mixup per batch.
        off_last_epochs: train the last N epochs unmixed (clean fine-tuning at the end).
    """

    def __init__(
        self,
        mode: str = "none",
        num_classes: int = 2,
        mixup_alpha: float = 0.2,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        off_last_epochs: int = 0,
    ) -> None:
        if mode not in MIX_MODES:
            raise ValueError(f"mix={mode!r} is not one of {MIX_MODES}")
        if mode in ("mixup", "mixup_cutmix") and mixup_alpha <= 0:
            raise ValueError(f"data.mix.mixup_alpha={mixup_alpha} must be > 0 with mix={mode}")
        if mode in ("cutmix", "mixup_cutmix") and cutmix_alpha <= 0:
            raise ValueError(f"data.mix.cutmix_alpha={cutmix_alpha} must be > 0 with mix={mode}")
        if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise ValueError("data.mix.prob and data.mix.switch_prob must be in [0, 1]")
        if off_last_epochs < 0:
            raise ValueError(f"data.mix.off_last_epochs={off_last_epochs} must be >= 0")
        self.mode, self.num_classes, self.prob = mode, num_classes, prob
        self.off_last_epochs = off_last_epochs
        self.transform: T.Transform | None = None
        if mode == "mixup":
            self.transform = T.MixUp(alpha=mixup_alpha, num_classes=num_classes)
        elif mode == "cutmix":
            self.transform = T.CutMix(alpha=cutmix_alpha, num_classes=num_classes)
        elif mode == "mixup_cutmix":
            self.transform = T.RandomChoice(
                [
                    T.MixUp(alpha=mixup_alpha, num_classes=num_classes),
                    T.CutMix(alpha=cutmix_alpha, num_classes=num_classes),
                ],
                p=[1 - switch_prob, switch_prob],
            )

    def active(self, epoch: int, max_epochs: int | None) -> bool:
        """Whether batches of `epoch` (0-based) are mixed."""
        if self.transform is None:
            return False
        if not (max_epochs and max_epochs > 0 and self.off_last_epochs):
            return True
        return epoch < max_epochs - self.off_last_epochs

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (mixed images, soft targets B x C whose rows sum to 1)."""
        if self.transform is None or len(images) < 2 or torch.rand(()) >= self.prob:
            return images, F.one_hot(labels.long(), self.num_classes).float()
        return self.transform(images, labels.long())
