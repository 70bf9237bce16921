"""How a run ends: Ctrl-C and SIGTERM, divergence, and checkpoint files that are never torn.

- `RunGuard` turns the first Ctrl-C (SIGINT) or SIGTERM into a stop at the next batch
  boundary: it saves `checkpoints/last.ckpt` there and raises `RunInterrupted`, so
  `summary.json` says `"status": "interrupted"`. A second Ctrl-C stops at once (Lightning's
  own KeyboardInterrupt path) and keeps the last.ckpt of the last epoch. Lightning alone
  would raise mid-validation on SIGTERM and, on Ctrl-C, save nothing.
- A checkpoint saved mid-epoch also carries the epoch's running training metrics, so a
  resumed run reports the same `train/loss` and `train/acc` for that epoch as an
  uninterrupted one (see `thawkit.seeding` for the data order and random numbers).
- `RunGuard` stops the run when the validation loss or any weight is non-finite, before the
  checkpoint callbacks run, so neither `best.ckpt` nor `last.ckpt` ever holds a diverged
  model; `FineTuneModule.training_step` does the same for the training loss (`check_loss`).
- `AtomicCheckpointIO` writes each checkpoint to a temporary file next to its target, syncs it
  and renames it over the target. (Lightning writes local files through fsspec, whose
  temporary file lives in the system temp dir: across file systems the final move is a copy,
  and a crash during it leaves a truncated checkpoint.)
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from pathlib import Path
from typing import Any

import fsspec
import lightning as L
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from thawkit.compat import epoch_running_means, metric_update_count, restore_metric
from thawkit.finetune.loss_guard import NonFiniteLossError, describe_checkpoints
from thawkit.reporting.status import RunInterrupted

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
MID_EPOCH_KEY = "thawkit_mid_epoch"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes local checkpoints as temp file + fsync + rename: a checkpoint is whole or absent."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        fs, local = fsspec.core.url_to_fs(str(path))
        if not isinstance(fs, LocalFileSystem) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable (POSIX); not possible on every platform.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tensor_states(metric: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in metric.metric_state.items()}


class RunGuard(L.Callback):
    """Graceful stop on Ctrl-C/SIGTERM, mid-epoch resume of running metrics, divergence stop.

    Args:
        output_dir: the run dir; the interrupt checkpoint is `<output_dir>/checkpoints/last.ckpt`.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.last_path = Path(output_dir) / LAST_CHECKPOINT
        self.requested: int | None = None  # the signal that asked to stop
        self._interrupting = False
        self._previous: dict[int, Any] = {}
        self._resumed_metrics: dict[str, Any] | None = None

    # ------------------------------------------------------------- signals
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            # Second Ctrl-C: stop now. Lightning's KeyboardInterrupt path takes over; the last.ckpt
            # of the last finished epoch stays the resume point.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = signum
        log.warning(
            "%s received: stopping after this training step and saving %s "
            "(Ctrl-C again stops at once, without saving).",
            signal.Signals(signum).name,
            self.last_path,
        )

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._on_signal and handler is not None:
                signal.signal(signum, handler)
        self._previous = {}

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    # ------------------------------------------------------------- training
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed here, after Lightning registered its own SIGTERM handler (which would stop
        # mid-validation): the stop happens only at a batch boundary.
        self._install_handlers()
        saved = self._resumed_metrics
        if saved and trainer.world_size == 1:
            metrics = getattr(pl_module, "train_metrics", None)
            if metrics is not None:
                for name, metric in metrics.items(keep_base=True, copy_state=False):
                    state = saved["train_metrics"].get(name)
                    if state is None:
                        continue
                    restore_metric(metric, state["states"], state["update_count"], pl_module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Any rank asked to stop: every rank stops at this same step (DDP needs all of them).
        stop = trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False)
        if not stop:
            return
        signum = self.requested or signal.SIGTERM
        self._interrupting = True
        try:
            trainer.save_checkpoint(self.last_path)
        finally:
            self._interrupting = False
        log.warning(
            "Stopped at epoch %d, step %d; saved %s. Resume with: python train.py resume=%s",
            trainer.current_epoch,
            trainer.global_step,
            self.last_path,
            self.last_path.parent.parent,
        )
        raise RunInterrupted(signum, trainer.current_epoch, trainer.global_step, self.last_path)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        saved, self._resumed_metrics = self._resumed_metrics, None
        if not saved or trainer.world_size > 1:
            return
        # The epoch's logged means (train/loss) exist again after the first resumed step: add
        # the sums of the batches trained before the interruption.
        results = epoch_running_means(trainer)
        for key, state in saved["logged"].items():
            entry = results.get(key)
            if entry is None:
                continue
            for attr, value in state.items():
                setattr(entry, attr, getattr(entry, attr) + value.to(getattr(entry, attr).device))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the checkpoint callbacks (Lightning runs them last): a weight that became
        # inf/NaN in the epoch's last step never reaches last.ckpt or best.ckpt.
        # Only what trains can have changed: frozen parameters get no gradient, no update and no
        # weight decay, and a group never freezes again once it trains (finetune/frozen.py), so
        # the check covers every weight a step touched; in a head-only epoch of a 3.4M-
        # parameter backbone it is the head alone (~9 ms an epoch less: docs/architecture.md,
        # "Epochs on cached features").
        bad = [
            n
            for n, p in pl_module.named_parameters()
            if p.requires_grad and not torch.isfinite(p).all()
        ]
        if bad:
            raise NonFiniteLossError(
                f"Non-finite weights after epoch {trainer.current_epoch} (step "
                f"{trainer.global_step}): {bad[:3]}. Not saved. Last good checkpoints: "
                f"{describe_checkpoints(trainer)}. To fix: lower model.lr or set "
                "trainer.gradient_clip_val."
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"Non-finite validation loss ({float(loss)}) at epoch {trainer.current_epoch} "
                f"(step {trainer.global_step}): the model diverged and was not saved. Last good "
                f"checkpoints: {describe_checkpoints(trainer)}. To fix: lower model.lr or set "
                "trainer.gradient_clip_val."
            )

    # ------------------------------------------------------------- checkpoint
    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not self._interrupting:
            return
        metrics = getattr(pl_module, "train_metrics", None)
        train_metrics = {}
        if metrics is not None:
            for name, metric in metrics.items(keep_base=True, copy_state=False):
                train_metrics[name] = {
                    "states": _tensor_states(metric),
                    "update_count": metric_update_count(metric),
                }
        logged = {key: _tensor_states(e) for key, e in epoch_running_means(trainer).items()}
        checkpoint[MID_EPOCH_KEY] = {"train_metrics": train_metrics, "logged": logged}

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._resumed_metrics = checkpoint.get(MID_EPOCH_KEY)
