"""BatchNorm policy: which layer groups keep their running statistics (and affine) frozen.

The policy is applied from the module's `train()` override, so Lightning's switches between
train and eval mode around validation can never undo it.
"""

from __future__ import annotations

from collections.abc import Iterable

from thawkit.models.backbone import LayerGroup


def stats_frozen(policy: str, group_trainable: bool) -> bool:
    """Whether a group's BatchNorm running statistics stay fixed under `policy`."""
    return policy == "all" or (policy == "frozen_groups" and not group_trainable)


def apply_modes(groups: Iterable[tuple[LayerGroup, bool]], policy: str, training: bool) -> None:
    """Put every BatchNorm layer in eval mode where the policy freezes its statistics.

    Only the norm's own mode is set, not its children's: timm's BatchNormAct2d holds its
    activation and an optional Dropout as children, and a frozen norm must not switch off
    that Dropout.
    """
    for group, trainable in groups:
        frozen = stats_frozen(policy, trainable)
        for norm in group.norms:
            norm.training = training and not frozen
