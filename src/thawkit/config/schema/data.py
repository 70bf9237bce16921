"""Schemas of the data groups: `data` (ImageFolderDataModule) and its `augment`, `mix`,
`imbalance` nodes (keyword arguments of train_transform, BatchMixer and the imbalance helpers).
"""

from dataclasses import dataclass, field
from typing import Any

from omegaconf import SI

from thawkit.config.schema.rules import above, at_least, one_of, spec, within

AUGMENT_PRESETS = ("none", "basic", "strong")
AUTO_AUGMENTS = ("none", "trivialaugment", "randaugment")
MIX_MODES = ("none", "mixup", "cutmix", "mixup_cutmix")
IMBALANCE_MODES = ("none", "sampler", "loss", "both")
SAMPLER_WEIGHTINGS = ("inverse", "sqrt_inverse")
LOSS_WEIGHTINGS = ("inverse", "effective_number")
BAD_IMAGE_POLICIES = ("skip", "error")

_PROBABILITY = within(0, 1, "[]")


@dataclass
class AugmentSchema:
    """`data.augment` (the `augment` group): keywords of thawkit.data.transforms.train_transform.

    The defaults are the `basic` preset: random resized crop + horizontal flip.
    """

    name: str = spec("basic", one_of(AUGMENT_PRESETS))
    scale: list[float] = spec([0.35, 1.0])
    ratio: list[float] = spec([0.75, 1.3333])
    # 0 where left/right matters (text, digits).
    hflip: float = spec(0.5, _PROBABILITY)
    vflip: float = spec(0.0, _PROBABILITY)
    color_jitter: float = 0.0
    hue: float = spec(0.0, within(0, 0.5, "[]"))
    rotation: float = 0.0
    translate: float = 0.0
    auto_augment: str = spec("none", one_of(AUTO_AUGMENTS))
    randaugment_num_ops: int = 2
    randaugment_magnitude: int = 9
    blur: float = spec(0.0, _PROBABILITY)
    erasing: float = spec(0.0, _PROBABILITY)


@dataclass
class MixSchema:
    """`data.mix` (the `mix` group): keywords of thawkit.data.mixing.BatchMixer."""

    mode: str = spec("none", one_of(MIX_MODES))
    mixup_alpha: float = spec(0.2, above(0))
    cutmix_alpha: float = spec(1.0, above(0))
    # Probability that a batch is mixed at all.
    prob: float = spec(1.0, _PROBABILITY)
    # With mixup_cutmix: probability of CutMix instead of Mixup per batch.
    switch_prob: float = spec(0.5, _PROBABILITY)
    # Train the last N epochs on clean (unmixed) batches.
    off_last_epochs: int = spec(0, at_least(0))


@dataclass
class ImbalanceSchema:
    """`data.imbalance` (the `imbalance` group): see thawkit.data.imbalance."""

    mode: str = spec("none", one_of(IMBALANCE_MODES))
    sampler_weighting: str = spec("inverse", one_of(SAMPLER_WEIGHTINGS))
    loss_weighting: str = spec("inverse", one_of(LOSS_WEIGHTINGS))
    # effective_number (Cui et al. 2019) only.
    beta: float = spec(0.999, within(0, 1, "()"))


@dataclass
class DataSchema:
    """`data`: thawkit.data.ImageFolderDataModule."""

    _target_: str = "thawkit.data.ImageFolderDataModule"
    # null = the default dataset: scikit-learn's digits, exported once to digits_root.
    root: str | None = None
    digits_root: str | None = SI("${oc.env:THAWKIT_DATA,${oc.env:HOME}/.cache/thawkit}/digits")
    # null = the backbone's own input size (64 px for the default digits).
    image_size: int | None = spec(None, at_least(1, " (or null for the backbone's own)"))
    batch_size: int = spec(32, at_least(1))
    # null = one less than the cores, at most 4.
    num_workers: int | None = spec(None, at_least(0, " (or null for automatic)"))
    val_fraction: float = spec(0.15, within(0, 1, "[)"))
    test_fraction: float = spec(0.0, within(0, 1, "[)"))
    seed: Any = SI("${seed}")
    on_bad_image: str = spec("skip", one_of(BAD_IMAGE_POLICIES))
    check_images: bool = True
    # Train without the files an audit's audit.json (or a text file, one path a line) lists.
    exclude: str | None = None
    augment: AugmentSchema = field(default_factory=AugmentSchema)
    mix: MixSchema = field(default_factory=MixSchema)
    imbalance: ImbalanceSchema = field(default_factory=ImbalanceSchema)
