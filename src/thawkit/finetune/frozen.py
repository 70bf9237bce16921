"""How a layer group's frozen state reaches its parameters and BatchNorm layers.

The state itself (which group trains since which step) lives in `FineTuneModule`; the
functions here only apply it, like the static `freeze`/`make_trainable` of Lightning's
finetuning callback.
"""

from __future__ import annotations

import warnings
from collections.abc import MutableMapping, Sequence

from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

from thawkit.models import batchnorm
from thawkit.models.backbone import LayerGroup


def apply_frozen_state(
    groups: Sequence[tuple[LayerGroup, bool]], bn_policy: str, freeze_affine: bool, training: bool
) -> None:
    """Set `requires_grad` per (group, trainable) pair and the BatchNorm modes of the policy.

    Args:
        groups: every backbone layer group with whether it trains.
        bn_policy: whose BatchNorm statistics stay fixed (`thawkit.models.batchnorm`).
        freeze_affine: also freeze BatchNorm weight and bias where the statistics are frozen.
        training: the module's own mode (eval mode puts every norm in eval mode).
    """
    for group, trainable in groups:
        for p in group.params:
            p.requires_grad_(trainable)
        if freeze_affine and batchnorm.stats_frozen(bn_policy, trainable):
            for norm in group.norms:
                for p in norm.parameters():
                    p.requires_grad_(False)
    batchnorm.apply_modes(groups, bn_policy, training)


def unfreeze_top(
    trainable_since: MutableMapping[str, int | None], top_down: Sequence[str], n: int, step: int
) -> list[str]:
    """Mark the top `n` groups of `top_down` (-1 = all) trainable since `step`; never
    re-freezes a group, nor moves the step of one already trainable.

    Returns:
        The names of the newly unfrozen groups, from the top.
    """
    n = len(top_down) if n < 0 else min(n, len(top_down))
    newly = [name for name in top_down[:n] if trainable_since[name] is None]
    for name in newly:
        trainable_since[name] = step
    return newly


class FrozenNormsWarningFilter:
    """Silences Lightning's "module(s) in eval mode at the start of training" warning while
    the only modules in eval mode are the BatchNorm layers the policy froze (on purpose).

    `install` before the fit starts and `remove` once training has started: any other module
    in eval mode still warns, and the filter never outlives the fit.
    """

    def __init__(self) -> None:
        self._entry: tuple | None = None

    def install(
        self, module: nn.Module, groups: Sequence[tuple[LayerGroup, bool]], bn_policy: str
    ) -> None:
        """Filter the warning if `module`'s modules in eval mode are exactly the norms that
        `bn_policy` froze in `groups` ((group, trainable) pairs)."""
        frozen = {id(m) for g, t in groups if batchnorm.stats_frozen(bn_policy, t) for m in g.norms}
        in_eval = [m for m in module.modules() if not m.training]
        if in_eval and all(id(m) in frozen for m in in_eval):
            warnings.filterwarnings(
                "ignore",
                message=rf"Found {len(in_eval)} module\(s\) in eval mode at the start of training",
                category=PossibleUserWarning,
            )
            self._entry = warnings.filters[0]

    def remove(self) -> None:
        if self._entry is not None and self._entry in warnings.filters:
            warnings.filters.remove(self._entry)
        self._entry = None
