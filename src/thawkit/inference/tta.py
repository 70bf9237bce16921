"""Test-time augmentation: the logits of several views of each image, averaged.

`tta=none` is the evaluation transform alone (the centre crop the model was validated on);
`flip` adds its horizontal mirror; `five_crop` is the centre and the four corner crops of the
image resized as for evaluation but cropped to a square of the resize side first (the crops of
torchvision's `FiveCrop`). A list combines presets and single views, e.g. `tta=[flip,
five_crop]` (six views) or `tta=[center,top_left]`. The logits are averaged, not the
probabilities: the temperature then applies to the average as to one view, and the output has
the shape of a single view's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from thawkit.data.transforms import eval_resize, eval_transform
from thawkit.models.backbone import Preprocessing

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
VIEWS = ("center", "hflip", *CORNERS)
PRESETS: dict[str, tuple[str, ...]] = {
    "none": ("center",),
    "flip": ("center", "hflip"),
    "five_crop": ("center", *CORNERS),
}


def resolve_views(tta: str | Sequence[str] | None) -> tuple[str, ...]:
    """The views of `tta` (a preset, a view, or a list of both), each once, in order.

    Raises:
        ValueError: an unknown name, naming the choices.
    """
    names = [tta] if tta is None or isinstance(tta, str) else list(tta)
    views: list[str] = []
    for name in names:
        name = "none" if name is None else str(name)
        if name in PRESETS:
            views += PRESETS[name]
        elif name in VIEWS:
            views.append(name)
        else:
            raise ValueError(
                f"tta={tta!r}: {name!r} is neither a preset {sorted(PRESETS)} nor a view "
                f"{list(VIEWS)}. Use e.g. tta=flip or tta=[flip,five_crop]."
            )
    return tuple(dict.fromkeys(views)) or PRESETS["none"]


def needs_corners(views: Sequence[str]) -> bool:
    return any(v in CORNERS for v in views)


def tta_transform(pre: Preprocessing, size: int, views: Sequence[str]) -> Any:
    """The per-image transform of these views: the evaluation transform, or (for corner crops)
    the same resize cropped to a square of the resize side, from which `views_of` crops."""
    if not needs_corners(views):
        return eval_transform(pre, size)
    resize = eval_resize(size, pre.crop_pct)
    return T.Compose(
        [
            T.Resize(resize, interpolation=InterpolationMode(pre.interpolation), antialias=True),
            T.CenterCrop(resize),
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(pre.mean, pre.std),
        ]
    )


def input_side(pre: Preprocessing, size: int, views: Sequence[str]) -> int:
    """The side of the square images `tta_transform` makes."""
    return eval_resize(size, pre.crop_pct) if needs_corners(views) else size


def views_of(x: torch.Tensor, views: Sequence[str], size: int) -> list[torch.Tensor]:
    """The `views` (B x C x size x size each) of a batch made by `tta_transform`."""
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
    center = x[..., top : top + size, left : left + size]
    crops = {
        "center": center,
        "hflip": center.flip(-1),
        "top_left": x[..., :size, :size],
        "top_right": x[..., :size, w - size :],
        "bottom_left": x[..., h - size :, :size],
        "bottom_right": x[..., h - size :, w - size :],
    }
    return [crops[v] for v in views]


def tta_logits(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    views: Sequence[str],
    size: int,
) -> torch.Tensor:
    """The mean of `logits_of` over the views of `x`; one view is `logits_of(x)` exactly."""
    if tuple(views) == ("center",) and x.shape[-1] == size:
        return logits_of(x)
    total = None
    for view in views_of(x, views, size):
        out = logits_of(view.contiguous())
        total = out if total is None else total + out
    return total / len(views)
