"""Every use of Lightning's (and torchmetrics') private API, in one place.

thawkit needs a few things Lightning does not expose publicly: the training loop's progress
counters and logged running means (exact mid-epoch resume), whether a step's values reach the
loggers, the data fetcher it keeps across a
resume, a checkpoint callback's last saved step, `WeightAveraging`'s averaged model, and the type
of its script launcher. Each function below wraps one of them and says why it is needed, so a
Lightning upgrade that moves one breaks here, with a clear name, instead of deep in a callback.

Tested against lightning 2.6 (pyproject.toml pins `lightning>=2.4,<2.7`, and torchmetrics 1.9);
before raising that bound, run `make test-all`: tests/run/test_reliability_resume.py,
tests/run/test_resume.py, tests/transfer/test_ema.py and tests/finetune/test_ddp.py exercise all
of these.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

# --------------------------------------------------------------------- the training loop


def batches_done_on_resume(trainer: L.Trainer) -> int:
    """Training batches of the current epoch a mid-epoch checkpoint already covered, else 0.

    Wraps `fit_loop.restarting`, `fit_loop.epoch_progress` and `epoch_loop.batch_progress` (the
    loops' progress trackers, not a documented API): the sampler skips exactly these images on a
    resume (thawkit.seeding.batches_done_in_epoch).
    """
    fit_loop = trainer.fit_loop
    epochs = fit_loop.epoch_progress.current
    mid_epoch = fit_loop.restarting and epochs.processed < epochs.started
    return fit_loop.epoch_loop.batch_progress.current.completed if mid_epoch else 0


def batch_being_prepared(trainer: L.Trainer) -> int:
    """Index in its epoch of the training batch being fetched or trained now.

    Wraps `epoch_loop.batch_progress.current.ready`; `batch_idx` is not passed to the hooks that
    mix a batch (`on_after_batch_transfer`), and Mixup/CutMix are keyed by it (thawkit.seeding).
    """
    return trainer.fit_loop.epoch_loop.batch_progress.current.ready


def epochs_processed(trainer: L.Trainer) -> int:
    """Epochs the fit loop has finished (restored from the checkpoint on a resume)."""
    return trainer.fit_loop.epoch_progress.current.processed


def restart_training_fetcher(trainer: L.Trainer, epoch: int) -> None:
    """Give every training sampler `epoch` and start the training data fetcher afresh.

    Wraps `fit_loop._data_fetcher`, `fit_loop._combined_loader` and
    `lightning.fabric.utilities.data._set_sampler_epoch`: Lightning creates the training iterator
    before it restores a checkpoint's counters and keeps it, so a resumed run would otherwise
    draw its first epoch's order from the start (thawkit.seeding.restart_train_iterator).
    """
    fit_loop = trainer.fit_loop
    fetcher, loader = fit_loop._data_fetcher, fit_loop._combined_loader
    if fetcher is None or loader is None:
        return
    for dataloader in loader.flattened:
        _set_sampler_epoch(dataloader, epoch)
    iter(fetcher)


def logs_this_step(trainer: L.Trainer) -> bool:
    """Whether Lightning hands this training step's `on_step` values to the loggers.

    Wraps `trainer._logger_connector.should_update_logs` (every `trainer.log_every_n_steps`
    steps, and when the run stops; every step under `fast_dev_run`), the check that Lightning's
    own `LearningRateMonitor` makes in `on_train_batch_start`: a value logged `on_step` at any
    other step reaches no logger, so FineTuneModule logs its per-group LRs only at these steps
    (docs/architecture.md, "Epochs on cached features").
    """
    return bool(trainer._logger_connector.should_update_logs or trainer.fast_dev_run)


def epoch_running_means(trainer: L.Trainer) -> dict[str, Any]:
    """The training epoch's logged running means (`self.log(..., on_epoch=True)`), by key.

    Wraps `fit_loop.epoch_loop._results` and its `_ResultMetric` entries (`is_tensor`,
    `meta.on_epoch`, `meta.is_mean_reduction`; their tensor states are `value` and
    `cumulated_batch_size`): an interrupt checkpoint saves their sums and a resumed run adds them
    back, so it reports the same epoch `train/loss` as an uninterrupted one
    (thawkit.run.lifecycle.RunGuard).
    """
    entries = {}
    for key, entry in trainer.fit_loop.epoch_loop._results.items():
        meta = getattr(entry, "meta", None)
        if getattr(entry, "is_tensor", False) and meta.on_epoch and meta.is_mean_reduction:
            entries[key] = entry
    return entries


# --------------------------------------------------------------------- metrics and callbacks


def metric_update_count(metric: Any) -> int:
    """How many batches a torchmetrics `Metric` has seen (its private `_update_count`)."""
    return int(metric._update_count)


def restore_metric(
    metric: Any, states: dict[str, torch.Tensor], update_count: int, device: torch.device
) -> None:
    """Put a torchmetrics `Metric` back in a saved state (mid-epoch resume of `train/acc`).

    Wraps `_update_count` (a metric with count 0 refuses `compute()`) and `_computed` (the cached
    result, which must be dropped): torchmetrics has no public "load running state".
    """
    for attr, value in states.items():
        setattr(metric, attr, value.to(device))
    metric._update_count = update_count
    metric._computed = None


def last_saved_step(callback: ModelCheckpoint) -> int:
    """The global step of a `ModelCheckpoint`'s latest save (its private
    `_last_global_step_saved`), named in divergence errors (thawkit.finetune.loss_guard)."""
    return int(callback._last_global_step_saved)


def averaged_model(callback: WeightAveraging) -> torch.optim.swa_utils.AveragedModel | None:
    """`WeightAveraging`'s `AveragedModel` during fit, else None (its private `_average_model`).

    thawkit.transfer.ema.EMA moves it to the module's device, frees it after fit and exposes
    the averaged module to callers.
    """
    return callback._average_model


def drop_averaged_model(callback: WeightAveraging) -> None:
    """Free `WeightAveraging`'s averaged copy (after fit the module holds the average)."""
    callback._average_model = None


def averaging_device(callback: WeightAveraging) -> torch.device | int | None:
    """The device `WeightAveraging` was told to keep the average on (its private `_device`);
    None means "where `setup` put it", which is before the strategy moved the module."""
    return callback._device


# --------------------------------------------------------------------- launchers


def relaunches_script(launcher: Any) -> bool:
    """True when DDP ranks 1..N-1 are started by re-running the command line.

    Wraps the type `_SubprocessScriptLauncher` (private): thawkit.run.job moves such a multirun
    job into its own process, since the command line there is the whole sweep.
    """
    return isinstance(launcher, _SubprocessScriptLauncher)
