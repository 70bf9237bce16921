"""Schemas of the weight-space options of a run: WiSE-FT and SWA (`weight_space`), and the LR
finder (`tune`). The switches themselves are top-level keys: `wiseft=true`, `swa=true`."""

from dataclasses import dataclass

from thawkit.config.schema.rules import Rule, at_least, spec, within


def alphas_problem(values: object) -> str | None:
    """The message for a bad `weight_space.alphas` (a list, so no range rule can hold it)."""
    ok = isinstance(values, list | tuple) and bool(values)
    ok = ok and all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in values
    )
    return None if ok else f"weight_space.alphas={values!r}: allowed a non-empty list in [0, 1]"


@dataclass
class WeightSpaceSchema:
    """`weight_space`: WiSE-FT's grid and probe, SWA's start, BatchNorm recalibration."""

    # WiSE-FT: the weights a of (1 - a) * start + a * finetuned that are evaluated on val.
    # (checked by alphas_problem, from thawkit.config.checks)
    alphas: list[float] = spec([0.0, 0.25, 0.5, 0.75, 1.0])
    # Head-only steps (full batch, on frozen features) of the probe head WiSE-FT starts from
    # (on from the head of the strategy's head-only epochs, when it had some).
    probe_steps: int = spec(200, at_least(1))
    probe_lr: float = spec(0.01, Rule(lambda v: v > 0, "> 0"))
    # Training images BatchNorm statistics are recomputed on, for each mixed model.
    bn_images: int = spec(1024, at_least(1))
    # SWA: averaging starts at this fraction of trainer.max_epochs (0.75: the last quarter).
    swa_start: float = spec(0.75, within(0, 1, "[)"))


@dataclass
class TuneSchema:
    """`tune`: search settings run before training (`tune.lr_find=true`)."""

    # Lightning's Tuner.lr_find on the head LR (frozen backbone); the suggestion replaces
    # model.lr, and the discriminative ratios (model.lr_decay) stay.
    lr_find: bool = False
    min_lr: float = spec(1.0e-6, Rule(lambda v: v > 0, "> 0"))
    max_lr: float = spec(1.0, Rule(lambda v: v > 0, "> 0"))
    num_steps: int = spec(100, at_least(10))
    # Points of the curve skipped at the start (early spikes of a fresh head).
    burn_in: int = spec(10, at_least(0))
    # Width (points) of the moving average the suggestion is read from.
    smoothing: int = spec(5, at_least(1))
