"""A callback that records, at every training step, what a strategy did to the model.

Shared by test_unfreeze.py and test_resume.py. It records what the optimizer step of that
training batch actually sees: requires_grad per layer group, the mode each BatchNorm layer had
when its forward ran (forward pre-hooks, so a mode flipped back by a validation in the middle of
the epoch is caught), whether its running statistics changed during the step, every param
group's LR, and the optimizer's layout (object, group names and parameter lists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, open_dict

from thawkit.finetune.module import FineTuneModule
from thawkit.run.train import build


def _buffers(norm: torch.nn.Module) -> list[torch.Tensor]:
    return [norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone()]


class Probe(L.Callback):
    """Records one row per training step (see the module docstring)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.at_train_start: dict[str, Any] | None = None
        self.initial_backbone: dict[str, torch.Tensor] | None = None  # at setup, before fit
        self.initial_head: dict[str, torch.Tensor] | None = None
        self.validations: list[int] = []  # the epoch of every (non-sanity) validation run
        self.epoch_buffers: dict[int, tuple[dict, dict]] = {}  # epoch -> (start, end) buffers
        self._in_step = False
        self._forward_modes: dict[str, list[bool]] = {}
        self._before: dict[str, list[list[torch.Tensor]]] = {}
        self._hooks: list[Any] = []

    # -- helpers
    @staticmethod
    def norm_buffers(module: FineTuneModule) -> dict[str, list[list[torch.Tensor]]]:
        return {g.name: [_buffers(n) for n in g.norms] for g in module.backbone.groups}

    @staticmethod
    def requires_grad(module: FineTuneModule) -> dict[str, dict[str, list[bool]]]:
        """Per group: requires_grad of its non-norm parameters and of its norm parameters."""
        out = {}
        for g in module.backbone.groups:
            norm_ids = {id(p) for n in g.norms for p in n.parameters()}
            out[g.name] = {
                "weights": [p.requires_grad for p in g.params if id(p) not in norm_ids],
                "norms": [p.requires_grad for p in g.params if id(p) in norm_ids],
            }
        out["head"] = {"weights": [p.requires_grad for p in module.head.parameters()], "norms": []}
        return out

    # -- hooks
    def setup(self, trainer: L.Trainer, pl_module: FineTuneModule, stage: str) -> None:
        self.initial_backbone = {k: v.clone() for k, v in pl_module.backbone.state_dict().items()}
        self.initial_head = {k: v.clone() for k, v in pl_module.head.state_dict().items()}
        for g in pl_module.backbone.groups:
            for i, norm in enumerate(g.norms):
                self._hooks.append(norm.register_forward_pre_hook(self._record_mode(g.name, i)))

    def teardown(self, trainer: L.Trainer, pl_module: FineTuneModule, stage: str) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _record_mode(self, group: str, index: int):
        def hook(module: torch.nn.Module, args: Any) -> None:
            if self._in_step:
                self._forward_modes[group][index] = module.training

        return hook

    def on_train_start(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        # After a resume has restored everything, before the first training step.
        self.at_train_start = {
            "global_step": trainer.global_step,
            "requires_grad": self.requires_grad(pl_module),
            "bn_train": {g.name: [n.training for n in g.norms] for g in pl_module.backbone.groups},
            "trainable_since": dict(pl_module.trainable_since),
        }

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        self.epoch_buffers[trainer.current_epoch] = (self.norm_buffers(pl_module), {})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        self.epoch_buffers[trainer.current_epoch] = (
            self.epoch_buffers[trainer.current_epoch][0],
            self.norm_buffers(pl_module),
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        if not trainer.sanity_checking:
            self.validations.append(trainer.current_epoch)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: FineTuneModule, batch: Any, batch_idx: int
    ) -> None:
        self._forward_modes = {g.name: [None] * len(g.norms) for g in pl_module.backbone.groups}
        self._before = self.norm_buffers(pl_module)
        optimizer = trainer.optimizers[0]
        self.rows.append(
            {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "requires_grad": self.requires_grad(pl_module),
                # The LR this batch's optimizer step uses (schedulers step after it).
                "lr": {g["name"]: g["lr"] for g in optimizer.param_groups},
                "layout": (
                    id(optimizer),
                    tuple(
                        (g["name"], tuple(id(p) for p in g["params"]))
                        for g in optimizer.param_groups
                    ),
                ),
            }
        )
        self._in_step = True

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: FineTuneModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._in_step = False
        after = self.norm_buffers(pl_module)
        row = self.rows[-1]
        row["bn_train"] = self._forward_modes
        row["stats_changed"] = {
            name: [
                any(not torch.equal(a, b) for a, b in zip(before, now, strict=True))
                for before, now in zip(self._before[name], after[name], strict=True)
            ]
            for name in after
        }

    def epoch_rows(self, epoch: int) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["epoch"] == epoch]


def fit_with_probe(
    cfg: DictConfig, probe: Probe | None = None, ckpt_path: str | Path | None = None
) -> tuple[Probe, FineTuneModule, L.Trainer]:
    """Build the composed config with `thawkit.run.train.build`, add a probe, and fit."""
    with open_dict(cfg):
        cfg.logger = None  # the probe is the record here; TensorBoard costs time
        cfg.callbacks.early_stopping = None  # runs must last exactly max_epochs
    datamodule, model, trainer = build(cfg)
    probe = probe or Probe()
    trainer.callbacks.append(probe)
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return probe, model, trainer
