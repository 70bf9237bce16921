"""Schemas of the `strategy` group: UnfreezeSchedule (every strategy but auto) and AutoStrategy.

A strategy file (`# @package _global_`) names its schema in its defaults list
(`base_unfreeze` or `base_auto`) and states only what differs.
"""

from dataclasses import dataclass, field

from thawkit.config.schema.rules import Rule, above, at_least, count_or_all, one_of, spec, within

UNFREEZE_TARGET = "thawkit.finetune.unfreeze.UnfreezeSchedule"
AUTO_TARGET = "thawkit.finetune.auto.AutoStrategy"
# When strategy=auto turns WiSE-FT on: never; for a pick that trains the head on frozen
# features first (the two ends share that head); for every pick that trains backbone layers.
WISEFT_WHEN = ("off", "shared_start", "backbone")
_GROUPS = Rule(lambda v: isinstance(v, int) and v >= -1, ">= 0, or -1 for all")


@dataclass
class UnfreezeSchema:
    """`strategy`: thawkit.finetune.unfreeze.UnfreezeSchedule (its docstring says each key)."""

    _target_: str = UNFREEZE_TARGET
    name: str = "custom"
    initial_groups: int = spec(0, _GROUPS)
    every_n_epochs: int | None = spec(None, at_least(1, " (or null: no epoch schedule)"))
    groups_per_step: int = spec(1, count_or_all())
    # Never train more than this many backbone groups (null = no cap).
    max_groups: int | None = spec(None, _GROUPS)
    max_events: int | None = spec(None, at_least(1, " (or null: no limit)"))
    on_plateau: bool = False
    # The validation metric a plateau watches (lower is better).
    monitor: str = "val/loss"
    patience: int = spec(1, at_least(0))
    lr_scale_after_unfreeze: float = spec(1.0, above(0))
    plateau_max_epochs: int | None = spec(None, at_least(1, " (or null: wait for the plateau)"))


@dataclass
class AutoSchema:
    """`strategy=auto`: thawkit.finetune.auto.AutoStrategy (the table: docs/strategies.md).

    Its keys depend on each other (very_far <= far <= near): AutoStrategy checks them.
    """

    _target_: str = AUTO_TARGET
    name: str = "auto"
    # Images per class (median over classes): small below, large above; huge allows scratch.
    small_per_class: int = 100
    large_per_class: int = 1000
    huge_per_class: int = 10000
    # Domain score (pretrained vs random features in a linear probe, 0..1): near at or above,
    # far below; very_far (with huge data) allows scratch.
    near: float = 0.75
    far: float = 0.25
    very_far: float = 0.1
    # At most this many training images go through the probe; 0 = no probe.
    max_images: int = 512
    # Also probe randomly initialised copies (the baseline); false = the pretrained probe alone.
    baseline: bool = True
    # Averaging (one probe of 100 images is noisy): k-fold repeats of each probe (reshuffled
    # folds, cheap), and random inits the baseline averages over (a forward pass each).
    probe_repeats: int = spec(10, at_least(1))
    baseline_inits: int = spec(5, at_least(1))
    # Keys auto must leave as configured although not on the command line (experiment files).
    keep: list[str] = field(default_factory=list)
    # A short race between the table's pick and these strategies (successive halving on a slice
    # of the training images; thawkit.finetune.auto.race); race: false = the table decides.
    # Small data (below small_per_class) never races: its held-out part would be a few images.
    race: bool = True
    # (feature_extraction joins them where the domain is near: AutoStrategy.race_names)
    candidates: list[str] = field(default_factory=lambda: ["full", "lp_ft"])
    # Training images in the race (an even share per class) and the share of them held out.
    race_images: int = spec(256, at_least(4))
    race_holdout: float = spec(0.34, within(0, 1, "()"))
    # Epochs of every race training (each schedule fitted into them).
    race_epochs: int = spec(3, at_least(1))
    # When auto turns WiSE-FT on (wiseft=true): one of WISEFT_WHEN (thawkit.finetune.auto.policy).
    wiseft: str = spec("backbone", one_of(WISEFT_WHEN))
