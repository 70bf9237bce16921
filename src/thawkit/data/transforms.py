"""Image transforms built from the backbone's own preprocessing (torchvision.transforms.v2).

Nothing here knows a mean, a std or an input size: they come from the backbone
(`thawkit.models.backbone.Preprocessing`), so a backbone trained with mean = std = 0.5
(EfficientNet-Lite) and one trained with ImageNet statistics (ResNet) each get their own.
`as_preprocessing` reads every form a `Preprocessing` travels in (config, checkpoint), and
`eval_resize` is the one statement of the evaluation resize (the decoded-image cache, the
predictor's metadata and exported models all use it).

Augmentation presets (`augment=` config group): `none`, `basic` (random resized crop +
horizontal flip), `strong` (adds colour jitter, affine, TrivialAugmentWide or RandAugment,
blur and random erasing). Every knob is a keyword of `train_transform` and a key of the preset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from thawkit.config.schema import AugmentSchema, check_args
from thawkit.models.backbone import Preprocessing, resolve_preprocessing


def as_preprocessing(preprocessing: Preprocessing | Mapping[str, Any] | str) -> Preprocessing:
    """A `Preprocessing`, its `to_dict()` form (config, checkpoint), or a backbone name."""
    if isinstance(preprocessing, Preprocessing):
        return preprocessing
    if isinstance(preprocessing, str):
        return resolve_preprocessing(preprocessing)
    if isinstance(preprocessing, Mapping):
        d = dict(preprocessing)
        return Preprocessing(
            input_size=int(d["input_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            interpolation=str(d["interpolation"]),
            crop_pct=float(d["crop_pct"]),
        )
    raise TypeError(
        f"preprocessing={preprocessing!r}: pass the backbone's Preprocessing "
        "(thawkit.models.backbone.resolve_preprocessing(name)) or the backbone's name."
    )


def eval_resize(size: int, crop_pct: float) -> int:
    """Shorter side the evaluation transform resizes to before its centre crop of `size`.

    size / crop_pct (a crop of 0.875 keeps the centre 87.5 %), never below `size`: images
    smaller than `size` are scaled up the same way.
    """
    return max(size, int(round(size / crop_pct)))


def _interp(name: str) -> InterpolationMode:
    try:
        return InterpolationMode(name)
    except ValueError:
        modes = [m.value for m in InterpolationMode]
        raise ValueError(f"Interpolation {name!r} is not one of {modes}") from None


def _to_normalised(pre: Preprocessing) -> list[T.Transform]:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)]


def eval_transform(pre: Preprocessing, size: int) -> T.Compose:
    """Resize the short side to `eval_resize`, centre-crop `size`, normalise (backbone stats)."""
    resize = eval_resize(size, pre.crop_pct)
    interp = _interp(pre.interpolation)
    return T.Compose(
        [T.Resize(resize, interpolation=interp, antialias=True), T.CenterCrop(size)]
        + _to_normalised(pre)
    )


def train_transform(
    pre: Preprocessing,
    size: int,
    name: str = AugmentSchema.name,
    scale: Sequence[float] = (0.35, 1.0),
    ratio: Sequence[float] = (0.75, 1.3333),  # AugmentSchema's (lists there)
    hflip: float = AugmentSchema.hflip,
    vflip: float = AugmentSchema.vflip,
    color_jitter: float = AugmentSchema.color_jitter,
    hue: float = AugmentSchema.hue,
    rotation: float = AugmentSchema.rotation,
    translate: float = AugmentSchema.translate,
    auto_augment: str = AugmentSchema.auto_augment,
    randaugment_num_ops: int = AugmentSchema.randaugment_num_ops,
    randaugment_magnitude: int = AugmentSchema.randaugment_magnitude,
    blur: float = AugmentSchema.blur,
    erasing: float = AugmentSchema.erasing,
) -> T.Compose:
    """Training transform of an augmentation preset; `none` is the eval transform.

    Args:
        pre: the backbone's preprocessing (mean/std, interpolation, crop fraction).
        size: output side in pixels.
        name: preset name: `none`, `basic` or `strong` (`none` ignores every other knob).
        scale, ratio: RandomResizedCrop area fraction and aspect ranges.
        hflip: horizontal flip probability (0 where left/right matters, e.g. text, digits).
        vflip: vertical flip probability (aerial, microscopy images).
        color_jitter: brightness/contrast/saturation strength (0 = off).
        hue: hue jitter in [0, 0.5] (0 = off; colour often carries the class).
        rotation: RandomAffine degrees (0 = off).
        translate: RandomAffine shift as a fraction of the side (0 = off).
        auto_augment: `none`, `trivialaugment` (TrivialAugmentWide) or `randaugment`.
        randaugment_num_ops, randaugment_magnitude: RandAugment's N and M.
        blur: probability of a Gaussian blur.
        erasing: probability of random erasing (after normalisation: erased pixels = the mean).
    """
    # The ranges and names are the schema's (thawkit.config.schema.AugmentSchema).
    check_args(
        AugmentSchema, "data.augment", name=name, hflip=hflip, vflip=vflip, hue=hue,
        auto_augment=auto_augment, blur=blur, erasing=erasing,
    )  # fmt: skip
    if name == "none":
        return eval_transform(pre, size)
    interp = _interp(pre.interpolation)
    ops: list[T.Transform] = [
        T.RandomResizedCrop(
            size, scale=tuple(scale), ratio=tuple(ratio), interpolation=interp, antialias=True
        )
    ]
    if hflip:
        ops.append(T.RandomHorizontalFlip(hflip))
    if vflip:
        ops.append(T.RandomVerticalFlip(vflip))
    if rotation or translate:
        shift = (translate, translate) if translate else None
        ops.append(T.RandomAffine(degrees=rotation, translate=shift, interpolation=interp))
    if color_jitter or hue:
        ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter, hue))
    if auto_augment == "trivialaugment":
        ops.append(T.TrivialAugmentWide(interpolation=interp))
    elif auto_augment == "randaugment":
        ops.append(
            T.RandAugment(
                num_ops=randaugment_num_ops, magnitude=randaugment_magnitude, interpolation=interp
            )
        )
    if blur:
        ops.append(T.RandomApply([T.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0))], p=blur))
    ops += _to_normalised(pre)
    if erasing:
        ops.append(T.RandomErasing(p=erasing))
    return T.Compose(ops)
