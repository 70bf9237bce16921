"""Stochastic weight averaging (`swa=true`, Izmailov et al., 2018): the equal average of the
weights over the last part of training.

Built, like EMA (thawkit.transfer.ema), on Lightning's `WeightAveraging`, not on Lightning's
`StochasticWeightAveraging`: that callback replaces the run's LR scheduler with its own SWALR
when averaging starts (thawkit's scheduler is gated by the frozen state, and the optimizer and
scheduler keep one layout for the whole run, docs/architecture.md) and recomputes BatchNorm
statistics in an extra training epoch that it adds to `max_epochs`, which a checkpoint taken
in between cannot describe. `WeightAveraging` keeps the average in every checkpoint
(`state_dict` = the average, `current_model_state` = the raw weights, `averaging_state` = the
count), so a run resumed after averaging started continues the same average, step for step.

What this callback adds:
- averaging starts at epoch `floor(start * max_epochs)` and then takes every optimizer step
  (an equal average of the iterates, SWA's "every iteration" form: validation of an epoch
  includes its own steps);
- before it starts, validation, checkpoints and the result are the raw weights (an average of
  no steps is the copy `WeightAveraging` made at setup, i.e. the initial weights);
- BatchNorm buffers are averaged alongside (so validation during the SWA phase is sensible);
  after fit, thawkit.run.weight_space recomputes the statistics of the layers that train on
  training images (the SWA paper's `bn_update`) and writes `checkpoints/swa.ckpt`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch

from thawkit.compat import averaged_model, averaging_device
from thawkit.config.schema import WeightSpaceSchema, check_args
from thawkit.transfer.ema import ResumableAveraging

log = logging.getLogger(__name__)


@torch.no_grad()
def swa_multi_avg_fn(averaged: list[torch.Tensor], current: list[torch.Tensor], n: Any) -> None:
    """An `AveragedModel` multi_avg_fn: the running equal mean (n values averaged so far);
    integer buffers (BatchNorm's counters) follow the model."""
    if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
        torch._foreach_lerp_(averaged, current, 1.0 / (float(n) + 1.0))
    else:
        for a, c in zip(averaged, current, strict=True):
            a.copy_(c)


class SWA(ResumableAveraging):
    """Equal average of the weights from `start` x max_epochs on.

    Args:
        start: the fraction of `trainer.max_epochs` after which averaging starts.
    """

    def __init__(self, start: float = WeightSpaceSchema.swa_start) -> None:
        check_args(WeightSpaceSchema, "weight_space", swa_start=start)
        super().__init__(use_buffers=True, multi_avg_fn=swa_multi_avg_fn)
        self.start = start
        self.start_epoch = 0
        self._epoch = 0
        # Steps in the average when training ended (the average itself is freed at teardown).
        self.averaged_at_end = 0

    @property
    def averaged(self) -> int:
        """Optimizer steps averaged so far (0: averaging has not started)."""
        average = averaged_model(self)
        return 0 if average is None else int(average.n_averaged)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        self.start_epoch = min(epochs - 1, math.floor(self.start * epochs))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        average = averaged_model(self)
        if average is not None and averaging_device(self) is None:
            average.to(pl_module.device)
        log.info("SWA: averaging the weights of every step from epoch %d on", self.start_epoch)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and self._epoch >= self.start_epoch

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        # should_update gets no epoch with a step; a run resumed mid-epoch has no epoch start.
        self._epoch = trainer.current_epoch
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averaged:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averaged:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.averaged_at_end = self.averaged
        if self.averaged:
            super().on_train_end(trainer, pl_module)
        else:
            log.warning(
                "SWA: training ended at epoch %d, before averaging started (epoch %d); the "
                "model is the last weights",
                trainer.current_epoch,
                self.start_epoch,
            )

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.averaged or averaged_model(self) is None:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            return
        # Not started: the checkpoint is the raw weights, and a resume starts the average
        # afresh from them (an average of no steps is replaced at its first update).
        average = averaged_model(self)
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["averaging_state"] = {
            k: v for k, v in average.state_dict().items() if not k.startswith("module.")
        }
