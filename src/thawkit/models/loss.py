"""Cross-entropy on soft targets, with label smoothing and class weights.

Definition (used with hard labels, Mixup/CutMix targets and label smoothing alike):
targets t (B x C, rows sum to 1) are smoothed to t' = (1 - eps) t + eps / C; each sample's
weight is the class weight its target puts on it, w_i = sum_c t_ic w_c (mixed samples get the
mix of their two classes' weights); loss = sum_i w_i CE(p_i, t'_i) / sum_i w_i.
With hard labels, no smoothing, this equals `F.cross_entropy(..., weight=w)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def as_soft_targets(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices (B,) or soft targets (B, C) -> soft targets (B, C) as float."""
    if targets.ndim == 1:
        return F.one_hot(targets.long(), num_classes).float()
    return targets.float()


def soft_target_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Class-weighted, label-smoothed cross-entropy for hard or soft targets (see module doc)."""
    num_classes = logits.shape[-1]
    t = as_soft_targets(targets, num_classes)
    w = (t @ class_weights.to(t)) if class_weights is not None else None
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / num_classes
    per_sample = -(t * F.log_softmax(logits.float(), dim=-1)).sum(-1)
    if w is None:
        return per_sample.mean()
    return (w * per_sample).sum() / w.sum()
