"""A callback for the DDP tests, loaded by the training processes from the config.

Each rank records which training samples it saw (the tests' images carry their index in their
red channel), the validation metrics it computed, and its weights before and after training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch


class DDPProbe(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.seen: dict[int, list[int]] = {}
        self.metrics: dict[int, dict[str, float]] = {}
        self.start: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.start = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        pre = pl_module.backbone.preprocessing
        red = (batch[0][:, 0].mean(dim=(1, 2)) * pre.std[0] + pre.mean[0]) * 255
        self.seen.setdefault(trainer.current_epoch, []).extend(red.round().int().tolist())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        keep = ("val/loss", "val/acc", "val/f1_macro", "train/loss_epoch")
        metrics = trainer.callback_metrics
        self.metrics[trainer.current_epoch] = {k: float(metrics[k]) for k in keep if k in metrics}

    @staticmethod
    def _group_keys(pl_module: Any) -> dict[str, list[str]]:
        names = {id(p): n for n, p in pl_module.named_parameters()}
        return {g.name: [names[id(p)] for p in g.params] for g in pl_module.backbone.groups}

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "seen": self.seen,
            "metrics": self.metrics,
            "start": self.start,
            "end": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            "trainable_since": dict(pl_module.trainable_since),
            "groups": self._group_keys(pl_module),
        }
        torch.save(record, self.out_dir / f"rank{trainer.global_rank}.pt")
