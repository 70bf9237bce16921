"""The loss guard: a NaN or infinite training loss stops the run before it changes a weight."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from thawkit.compat import last_saved_step


class NonFiniteLossError(FloatingPointError):
    """The loss (or a weight) became NaN or infinite: the run stops before saving that model."""


def describe_checkpoints(trainer: L.Trainer) -> str:
    """The checkpoints on disk that a run can go back to, e.g. for an error message."""
    seen: list[str] = []
    for cb in trainer.checkpoint_callbacks:
        if not isinstance(cb, ModelCheckpoint):
            continue
        for path in (cb.best_model_path, cb.last_model_path):
            if not path or not Path(path).is_file() or any(path in s for s in seen):
                continue
            if cb.monitor and path == cb.best_model_path and cb.best_model_score is not None:
                seen.append(f"{path} (best {cb.monitor}={float(cb.best_model_score):.4g})")
            else:
                seen.append(f"{path} (saved at step {last_saved_step(cb)})")
    return ", ".join(seen) if seen else "none yet (no epoch finished)"


def check_loss(module: L.LightningModule, loss: torch.Tensor, batch_idx: int) -> None:
    """Raise `NonFiniteLossError` for a NaN or infinite training loss, before backward runs."""
    if torch.isfinite(loss).all():
        return
    trainer = module.trainer
    raise NonFiniteLossError(
        f"Non-finite training loss ({float(loss.detach().float().mean())}) at epoch "
        f"{trainer.current_epoch}, step {trainer.global_step} (batch {batch_idx} of the epoch). "
        "The run stopped before this step changed any weight. Last good checkpoints: "
        f"{describe_checkpoints(trainer)}. To fix: lower model.lr, set "
        "trainer.gradient_clip_val (e.g. 1.0), or check the data; trainer.detect_anomaly=true "
        "names the operation that produced it."
    )
