"""Optimizer parameter groups: discriminative LRs per layer group, no weight decay on norms
and biases.

Every layer group is in the optimizer from step 0 (docs/architecture.md): a frozen group's LR
is gated to 0 by the scheduler, so unfreezing never rebuilds the optimizer or its state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

NO_DECAY = "/no_decay"


def layered_param_groups(
    layered: Sequence[tuple[str, Sequence[nn.Parameter]]],
    lr: float,
    lr_decay: float,
    weight_decay: float,
) -> list[dict[str, Any]]:
    """One (decay, no-decay) pair per layer group, LR = lr * lr_decay**depth.

    Args:
        layered: (layer group name, its parameters), the head first (depth 0), then down.
        lr: the head's learning rate.
        lr_decay: LR multiplier per layer group going down from the head.
        weight_decay: applied to weight matrices and kernels only; parameters with at most one
            dimension (norm weights and biases, all biases) get none.

    Returns:
        Optimizer param groups, each with `name` (`<group>` or `<group>/no_decay`) and
        `layer_group` (the scheduler's key); an empty half is left out.
    """
    groups = []
    for depth, (name, params) in enumerate(layered):
        group_lr = lr * lr_decay**depth
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        for suffix, ps, wd in (("", decay, weight_decay), (NO_DECAY, no_decay, 0.0)):
            if ps:
                groups.append(
                    {
                        "params": ps,
                        "lr": group_lr,
                        "weight_decay": wd,
                        "name": name + suffix,
                        "layer_group": name,
                    }
                )
    return groups


def layer_group_lrs(optimizer: torch.optim.Optimizer, prefix: str = "") -> dict[str, float]:
    """Current LR of every layer group (in the optimizer's order: head first)."""
    # Both halves (decay, no-decay) of a layer group always share one LR.
    return {prefix + g["layer_group"]: float(g["lr"]) for g in optimizer.param_groups}
