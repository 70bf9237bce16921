"""Image transforms built from the backbone's own preprocessing (torchvision.transforms.v2).

Augmentation presets (`augment=` config group): `none`, `basic` (random resized crop +
horizontal flip), `strong` (adds colour jitter, affine, TrivialAugmentWide or RandAugment,
blur and random erasing). Every knob is a key of the preset.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from thawkit.backbone import Preprocessing

AUGMENT_PRESETS = ("none", "basic", "strong")
AUTO_AUGMENTS = ("none", "trivialaugment", "randaugment")


def _interp(name: str) -> InterpolationMode:
    return InterpolationMode(name)


def _to_normalised(pre: Preprocessing) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)]


def eval_transform(pre: Preprocessing, size: int) -> T.Compose:
    """Resize to size / crop_pct and centre-crop `size`, then normalise with the backbone's stats."""
    resize = max(size, int(round(size / pre.crop_pct)))
    return T.Compose(
        [T.Resize(resize, interpolation=_interp(pre.interpolation), antialias=True), T.CenterCrop(size)]
        + _to_normalised(pre)
    )


def train_transform(
    pre: Preprocessing,
    size: int,
    name: str = "basic",
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    color_jitter: float = 0.0,
    rotation: float = 0.0,
    translate: float = 0.0,
    auto_augment: str = "none",
    randaugment_magnitude: int = 9,
    blur: float = 0.0,
    erasing: float = 0.0,
) -> T.Compose:
    """Training transform of an augmentation preset; `none` is the eval transform.

    Args:
        pre: the backbone's preprocessing (size, mean/std, interpolation, crop).
        size: output side in pixels.
        name: preset name, for error messages and `none`.
        scale, ratio: RandomResizedCrop area and aspect ranges.
        hflip: horizontal flip probability (0 for data where left/right matters, e.g. text).
        color_jitter: brightness/contrast/saturation strength (0 = off).
        rotation, translate: RandomAffine degrees and fraction (0 = off).
        auto_augment: `none`, `trivialaugment` or `randaugment`.
        randaugment_magnitude: RandAugment magnitude.
        blur: probability of a Gaussian blur.
        erasing: probability of random erasing (applied after normalisation).
    """
    if name not in AUGMENT_PRESETS:
        raise ValueError(f"augment={name!r} is not one of {AUGMENT_PRESETS}")
    if auto_augment not in AUTO_AUGMENTS:
        raise ValueError(f"augment.auto_augment={auto_augment!r} is not one of {AUTO_AUGMENTS}")
    if name == "none":
        return eval_transform(pre, size)
    interp = _interp(pre.interpolation)
    ops: list = [T.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio), interpolation=interp, antialias=True)]
    if hflip:
        ops.append(T.RandomHorizontalFlip(hflip))
    if rotation or translate:
        ops.append(T.RandomAffine(degrees=rotation, translate=(translate, translate) if translate else None))
    if color_jitter:
        ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    if auto_augment == "trivialaugment":
        ops.append(T.TrivialAugmentWide(interpolation=interp))
    elif auto_augment == "randaugment":
        ops.append(T.RandAugment(magnitude=randaugment_magnitude, interpolation=interp))
    if blur:
        ops.append(T.RandomApply([T.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0))], p=blur))
    ops += _to_normalised(pre)
    if erasing:
        ops.append(T.RandomErasing(p=erasing))
    return T.Compose(ops)
