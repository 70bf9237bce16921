"""Arithmetic on weights: interpolating two models, averaging several, recalibrating BatchNorm.

The mechanism behind WiSE-FT (`wiseft=true`, thawkit.run.wiseft), model soups (`thawkit soup`,
thawkit.run.soup) and SWA (`swa=true`, thawkit.transfer.swa). Pure functions of state dicts and
modules; what to mix and which mix to keep is decided by their callers.

- `interpolate(start, end, a)`: (1 - a) * start + a * end for every floating tensor. At a = 0
  and a = 1 it returns the endpoint itself, bit for bit (a mixed model at the endpoints *is*
  the trained model).
- `average(states)`: the uniform mean (a soup; SWA's running mean is the same thing over time).
- BatchNorm running statistics are not weights: the mean of two models' statistics is not the
  statistics of the averaged model's activations. `norms_that_differ` names the BatchNorm
  layers whose statistics differ between the mixed models (identical ones, e.g. of groups that
  never trained, mix to themselves and are left alone), and `recalibrate_bn` recomputes them on
  training images (torch.optim.swa_utils.update_bn, restricted to those layers: every other
  layer stays in eval mode, so dropout is off and no other statistic moves).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

State = dict[str, torch.Tensor]


def _floating(t: torch.Tensor) -> bool:
    return torch.is_floating_point(t) or torch.is_complex(t)


def check_mixable(states: Sequence[State]) -> None:
    """Raise ValueError unless every state has the same keys, shapes and dtypes."""
    first = states[0]
    for i, other in enumerate(states[1:], start=1):
        if set(other) != set(first):
            extra = sorted(set(other) ^ set(first))[:5]
            raise ValueError(f"state {i} has other tensors than state 0 (e.g. {extra})")
        for key, t in first.items():
            if other[key].shape != t.shape or other[key].dtype != t.dtype:
                raise ValueError(
                    f"state {i}: {key} is {tuple(other[key].shape)} {other[key].dtype}, state 0 "
                    f"has {tuple(t.shape)} {t.dtype}"
                )


@torch.no_grad()
def interpolate(start: State, end: State, a: float) -> State:
    """(1 - a) * start + a * end (integer buffers, e.g. BatchNorm's counters: end's)."""
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"interpolation weight a={a} must be in [0, 1]")
    check_mixable([start, end])
    if a == 0.0:
        return {k: v.clone() for k, v in start.items()}
    if a == 1.0:
        return {k: v.clone() for k, v in end.items()}
    return {k: torch.lerp(start[k], v, a) if _floating(v) else v.clone() for k, v in end.items()}


@torch.no_grad()
def average(states: Sequence[State]) -> State:
    """The uniform mean of `states` (integer buffers: the first state's)."""
    if not states:
        raise ValueError("nothing to average")
    check_mixable(states)
    if len(states) == 1:
        return {k: v.clone() for k, v in states[0].items()}
    out: State = {}
    for key, t in states[0].items():
        if _floating(t):
            total = torch.stack([s[key].double() for s in states]).sum(0)
            out[key] = (total / len(states)).to(t.dtype)
        else:
            out[key] = t.clone()
    return out


def batch_norms(module: nn.Module) -> dict[str, _BatchNorm]:
    """Every BatchNorm layer of `module` that tracks running statistics, by name."""
    return {
        name: m
        for name, m in module.named_modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
    }


def norms_that_differ(module: nn.Module, states: Sequence[State]) -> list[str]:
    """Names of `module`'s BatchNorm layers whose running statistics differ among `states`."""
    names = []
    for name in batch_norms(module):
        keys = [f"{name}.running_mean", f"{name}.running_var"]
        if any(k not in states[0] for k in keys):
            continue
        if any(not torch.equal(s[k], states[0][k]) for s in states[1:] for k in keys):
            names.append(name)
    return names


@torch.no_grad()
def recalibrate_bn(
    module: nn.Module,
    batches: Iterable[Any],
    norms: Sequence[str] | None = None,
    max_images: int | None = None,
) -> int:
    """Recompute the running statistics of BatchNorm layers `norms` (None: all) on `batches`.

    Like torch.optim.swa_utils.update_bn (cumulative mean, momentum None), but only the named
    layers are in train mode: every other layer stays in eval mode, so parameters, the other
    layers' statistics and dropout are untouched. The module's modes and momenta are restored.

    Args:
        module: the model; called on the first element of each batch (images).
        batches: an iterable of (images, labels) or of images.
        norms: BatchNorm layer names (`norms_that_differ`); None = every BatchNorm layer.
        max_images: stop after this many images (None: all of `batches`).

    Returns:
        The number of images the statistics were computed on.
    """
    layers = batch_norms(module)
    chosen = {n: layers[n] for n in (layers if norms is None else norms)}
    if not chosen:
        return 0
    modes = {m: m.training for m in module.modules()}
    momenta = {m: m.momentum for m in chosen.values()}
    device = next(module.parameters()).device
    seen = 0
    try:
        module.eval()
        for m in chosen.values():
            m.reset_running_stats()
            m.momentum = None  # a cumulative mean over every batch
            m.training = True
        for batch in batches:
            x = batch[0] if isinstance(batch, list | tuple) else batch
            if max_images is not None and seen >= max_images:
                break
            if max_images is not None:
                x = x[: max_images - seen]
            module(x.to(device))
            seen += len(x)
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return seen


@torch.no_grad()
def evaluate_loader(module: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
    """Accuracy and mean cross-entropy of `module` (in eval mode) on (images, labels) batches."""
    was = module.training
    module.eval()
    device = next(module.parameters()).device
    correct, loss, n = 0, 0.0, 0
    try:
        for x, y in batches:
            logits = module(x.to(device)).float()
            y = torch.as_tensor(y, device=logits.device)
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    finally:
        module.train(was)
    return {"acc": correct / n if n else float("nan"), "loss": loss / n if n else float("nan")}
