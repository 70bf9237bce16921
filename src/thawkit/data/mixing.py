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

from thawkit.config.schema import MixSchema, check_args
from thawkit.config.schema.data import MIX_MODES  # noqa: F401 - the modes, for callers


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
        mode: str = MixSchema.mode,
        num_classes: int = 2,
        mixup_alpha: float = MixSchema.mixup_alpha,
        cutmix_alpha: float = MixSchema.cutmix_alpha,
        prob: float = MixSchema.prob,
        switch_prob: float = MixSchema.switch_prob,
        off_last_epochs: int = MixSchema.off_last_epochs,
    ) -> None:
        # The ranges and modes are the schema's (thawkit.config.schema.MixSchema).
        check_args(
            MixSchema,
            "data.mix",
            mode=mode,
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=prob,
            switch_prob=switch_prob,
            off_last_epochs=off_last_epochs,
        )
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
