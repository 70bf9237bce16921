"""EMA of the weights (`ema=on`): Lightning's WeightAveraging with a warmed-up EMA update.

Lightning's `WeightAveraging` keeps a `torch.optim.swa_utils.AveragedModel` of the module,
updated after every optimizer step, swaps it in for validation, writes it as the checkpoint's
`state_dict` (the raw weights go to `current_model_state`, for resuming) and copies it into the
module when training ends. So `best.ckpt` holds the EMA weights, `val/*` metrics (and the best
checkpoint chosen on them) measure them, and test, predict, evaluate and export use them.

What thawkit adds (`EMA`):
- the decay warms up, min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's
  `ExponentialMovingAverage(num_updates=...)`, timm's `ModelEmaV2` warmup idea): a plain EMA
  with decay 0.999 would still weigh the random head of step 1 by 0.999^1000 = 37% after 1000
  steps, which is most of a fine-tuning run;
- the average lives on the module's device (WeightAveraging copies the module in `setup`,
  before the strategy moves it to the GPU);
- after fit, testing the best checkpoint uses its `state_dict` (the EMA weights):
  WeightAveraging would load the raw `current_model_state` instead, as it does on a resume.

Buffers are averaged too (`use_buffers=True`): BatchNorm running statistics of the groups that
train follow the EMA; frozen groups' statistics do not change, so their EMA equals them (a
frozen backbone's EMA is the backbone, bit for bit, and the feature cache stays valid).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from thawkit.compat import averaged_model, averaging_device, drop_averaged_model
from thawkit.config.schema import EMASchema, check_args

log = logging.getLogger(__name__)


def ema_multi_avg_fn(decay: float, warmup: bool = True) -> Callable[..., None]:
    """An `AveragedModel` multi_avg_fn: EMA with decay `decay`, warmed up over the first updates.

    Like `torch.optim.swa_utils.get_ema_multi_avg_fn`, with the decay of update n (n updates
    averaged so far) min(decay, (1 + n) / (10 + n)) when `warmup`.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: Any) -> None:
        d = min(decay, (1 + float(n)) / (10 + float(n))) if warmup else decay
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked): a count, not a weight
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


class ResumableAveraging(WeightAveraging):
    """Lightning's WeightAveraging as thawkit resumes it (EMA here, SWA in thawkit.transfer.swa)."""

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Only a resumed fit restores the raw weights and the average; test/predict keep the
        # checkpoint's state_dict, which is the average.
        if averaged_model(self) is not None and trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            # The module holds the average now (on_train_end); free the copy.
            drop_averaged_model(self)


class EMA(ResumableAveraging):
    """Exponential moving average of the weights, used for validation, checkpoints and the result.

    Args:
        decay: the EMA decay per optimizer step (0.999: an average over ~1000 steps).
        warmup: warm the decay up over the first updates (see `ema_multi_avg_fn`).
    """

    def __init__(self, decay: float = EMASchema.decay, warmup: bool = EMASchema.warmup) -> None:
        check_args(EMASchema, "callbacks.ema", decay=decay)  # the schema's range
        super().__init__(use_buffers=True, multi_avg_fn=ema_multi_avg_fn(decay, warmup))
        self.decay = decay
        self.warmup = warmup

    @property
    def average_model(self) -> torch.nn.Module | None:
        """The averaged copy of the module during fit (None outside fit)."""
        average = averaged_model(self)
        return None if average is None else average.module

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        average = averaged_model(self)
        if average is not None and averaging_device(self) is None:
            average.to(pl_module.device)
