"""Mixup and CutMix on whole batches, producing soft targets (torchvision.transforms.v2).

torchvision's CutMix sets the label weight to the pasted box's area, so soft targets always
describe the pixels. A batch that is not mixed (apply probability) still gets one-hot soft
targets, so the loss sees one target format for the whole run.
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
        mixup_alpha, cutmix_alpha: Beta distribution parameters (> 0 when used).
        prob: probability that a batch is mixed at all.
        switch_prob: with `mixup_cutmix`, probability of CutMix instead of Mixup.
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
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mix.mixup_alpha and mix.cutmix_alpha must be >= 0")
        if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise ValueError("mix.prob and mix.switch_prob must be in [0, 1]")
        if off_last_epochs < 0:
            raise ValueError(f"mix.off_last_epochs={off_last_epochs} must be >= 0")
        self.mode, self.num_classes, self.prob = mode, num_classes, prob
        self.off_last_epochs = off_last_epochs
        mixup = T.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_alpha > 0 else None
        cutmix = T.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_alpha > 0 else None
        choices = {
            "none": None,
            "mixup": mixup,
            "cutmix": cutmix,
            "mixup_cutmix": T.RandomChoice([mixup, cutmix], p=[1 - switch_prob, switch_prob])
            if mixup and cutmix
            else (mixup or cutmix),
        }
        self.transform = choices[mode]

    def active(self, epoch: int, max_epochs: int | None) -> bool:
        """Whether batches of `epoch` are mixed."""
        if self.transform is None:
            return False
        return not (max_epochs and self.off_last_epochs and epoch >= max_epochs - self.off_last_epochs)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None or torch.rand(()) >= self.prob or len(images) < 2:
            return images, F.one_hot(labels.long(), self.num_classes).float()
        return self.transform(images, labels.long())
