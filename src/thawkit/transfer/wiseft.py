"""WiSE-FT's start model (Wortsman et al., 2022): the pretrained backbone with a probe head.

WiSE-FT mixes the fine-tuned weights with the zero-shot ones, `(1 - a) * start + a * finetuned`.
For a new head there is no zero-shot classifier; the natural start is the one LP-FT makes: the
pretrained backbone with the head trained on its frozen features (the linear probe). This module
keeps that start during a fit, and makes a probe head after it where the run had none:

- `WiseFTStart` (a callback, added with `wiseft=true`) snapshots the backbone in `setup`, before
  a resumed run's checkpoint overwrites the weights (as L2-SP does, thawkit.transfer.regularize),
  and, at the start of every epoch in which the backbone is still frozen, the head: the head
  that leaves the head-only epochs of `lp_ft`, `two_phase` or `gradual` is the probe head.
  Both are saved in every checkpoint (+1x the backbone's size), so a resumed run keeps them.
- `fit_probe_head` trains the head on pooled features of the training images (the frozen
  pretrained backbone, evaluation transform: no augmentation), full batch: a fresh copy when
  the strategy trained the backbone from the first step (`full`, `partial`), else on from the
  head-only epochs' head. A probe is what `a = 0` should be, and one head-only epoch
  (`gradual`'s) is not one: on the small shared sets it scored 25 to 78% val accuracy where
  `feature_extraction` scored 64 to 93% (docs/weight_space.md), so `a = 0` could never be the
  floor it is meant to be. Trained on from that head, the mixes keep its lineage.

The interpolation, the BatchNorm recalibration and the choice of `a` are thawkit.run.wiseft's.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import lightning as L
import torch
from torch import nn

log = logging.getLogger(__name__)


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


class WiseFTStart(L.Callback):
    """Keeps WiSE-FT's start: the pretrained backbone and the head of the head-only epochs.

    Attributes:
        backbone_state: the backbone's state dict at the start of the fit (weights and
            BatchNorm statistics), on CPU.
        head_state: the head's state dict at the start of the last epoch in which the
            backbone was frozen; None when the backbone trained from epoch 0.
        probe_epochs: how many head-only epochs `head_state` had trained (0: none).
    """

    def __init__(self) -> None:
        self.backbone_state: dict[str, torch.Tensor] = {}
        self.head_state: dict[str, torch.Tensor] | None = None
        self.probe_epochs = 0

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        # A checkpoint that holds a snapshot replaces this one (load_state_dict, after setup).
        if stage == "fit" and not self.backbone_state:
            self.backbone_state = _cpu_copy(pl_module.backbone.state_dict())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        # Runs before UnfreezeSchedule's hook (thawkit.run.train adds this callback first): at
        # the epoch that unfreezes, the head is still the probe's.
        if pl_module.num_trainable_groups == 0:
            self.head_state = _cpu_copy(pl_module.head.state_dict())
            self.probe_epochs = trainer.current_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "backbone_state": self.backbone_state,
            "head_state": self.head_state,
            "probe_epochs": self.probe_epochs,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.backbone_state = dict(state_dict["backbone_state"])
        self.head_state = state_dict["head_state"]
        self.probe_epochs = int(state_dict["probe_epochs"])


def fit_probe_head(
    head: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
    init: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A copy of `head` trained on pooled `features` (full batch, AdamW): from `init` when
    given, else re-initialised.

    Args:
        head: the run's head (its architecture is kept; its weights are not used).
        features: N x D pooled features of the frozen pretrained backbone.
        labels: N class indices.
        epochs: full-batch optimizer steps.
        lr, weight_decay: AdamW's.
        seed: the re-initialisation's seed.
        init: the head's state to train on from (the head-only epochs' head).
    """
    probe = copy.deepcopy(head).cpu().float()
    if init is not None:
        probe.load_state_dict(_cpu_copy(init))
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for m in probe.modules():
                if hasattr(m, "reset_parameters") and m is not probe:
                    m.reset_parameters()
    features, labels = features.float().cpu(), labels.long().cpu()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    probe.train()
    with torch.enable_grad():
        for _ in range(epochs):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(probe(features), labels)
            loss.backward()
            optimizer.step()
    probe.eval()
    log.info("WiSE-FT: fitted a probe head on %d frozen features (loss %.4f)", len(labels), loss)
    return probe
