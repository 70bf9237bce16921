"""The decision table of `strategy=auto`: signals in, a strategy and its settings out, with
the reasons in sentences. Pure: no data, no model, no config (CS231n's transfer-learning notes;
Yosinski et al. 2014, "How transferable are features in deep neural networks?").

The table (sizes per class: small < `small_per_class` <= medium <= `large_per_class` < large;
domain: near >= `near` > moderate >= `far` > far):

| data \\ domain | near               | moderate                    | far                      |
|---------------|--------------------|-----------------------------|--------------------------|
| small         | feature_extraction | gradual, depth by epochs    | partial (top third)      |
| medium        | two_phase          | gradual                     | full, lr_decay 0.9       |
| large         | full, lr_decay 0.7 | full                        | full, higher LR, 0.9     |

Huge data (>= `huge_per_class`) with a very far domain (< `very_far`) trains from scratch;
`model.weights=none` (nothing pretrained) always does. "depth by epochs" = one more group from
the top every epoch, as far as the epochs reach, never compressed into a short budget
(`Decision.compress`): with few images the number of layers that train grows with the epochs.
Small data trains with the default LRs and regularisation, and without the race: the evidence
for both is in docs/strategies.md (measured on the five shared sets, at 5 and 20 epochs).

For the final pick (the race may change the table's), `AutoStrategy.weight_space` turns WiSE-FT
on or not (`strategy.wiseft`; the evidence behind the default: docs/strategies.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from thawkit.config.schema import AutoSchema
from thawkit.config.schema.strategy import WISEFT_WHEN
from thawkit.finetune.auto.probe import Signals
from thawkit.finetune.auto.wiseft_rule import wiseft_choice

AUTO = "auto"
# The keys auto may fill (dotted config paths); the strategy node itself is always replaced.
FILLABLE = (
    "model.lr",
    "model.lr_decay",
    "model.weight_decay",
    "model.label_smoothing",
    "model.weights",
    "trainer.max_epochs",
    "wiseft",
)
# Epochs by data size: few images give few steps per epoch, so small data gets more epochs
# (early stopping on val/loss still ends a run that stops improving).
EPOCHS = {"small": 20, "medium": 12, "large": 8}
SCRATCH_EPOCHS = 30  # random init needs many more passes than fine-tuning
DEFAULT_LRS = {"model.lr": 2e-3, "model.lr_decay": 0.8}  # the cells below name what differs
SCRATCH = {"model.lr": 3e-3, "model.lr_decay": 1.0}
# (data size, domain) -> (strategy, settings that differ from DEFAULT_LRS, why). The numbers of
# layer groups trained come from the backbone: the top {third} of its {groups}.
TABLE: dict[tuple[str, str], tuple[str, dict[str, float], str]] = {
    ("small", "near"): (
        "feature_extraction",
        {},
        "the pretrained features already separate the classes; training backbone layers on "
        "few images would overfit them, so train a linear classifier on the frozen features",
    ),
    ("small", "moderate"): (
        "gradual",
        {},
        "the top features need to change, but few images cannot retrain the whole backbone at "
        "once; unfreeze one more group from the top every epoch, as far as the epochs reach, so "
        "the top groups train longest and the lower ones (generic edges and textures) only "
        "when there are epochs for them",
    ),
    ("small", "far"): (
        "partial",
        {},
        "the features must change more than a head can make up for, but few images cannot "
        "retrain the whole backbone; train the top {third} of {groups} layer groups from the "
        "start and keep the lower ones (generic edges and textures) frozen",
    ),
    ("medium", "near"): (
        "two_phase",
        {},
        "train the head first on the frozen features, then fine-tune every layer at a lower LR "
        "(the head no longer sends large random gradients into good features)",
    ),
    ("medium", "moderate"): (
        "gradual",
        {},
        "unfreeze one more group from the top every epoch, so the layers that must adapt most "
        "train longest",
    ),
    ("medium", "far"): (
        "full",
        {"model.lr_decay": 0.9},
        "every layer needs to adapt and the data can support it; full fine-tuning with mild LR "
        "decay down the layers",
    ),
    ("large", "near"): (
        "full",
        {"model.lr": 1e-3, "model.lr_decay": 0.7},
        "fine-tune every layer, with discriminative LRs (strong decay) so the good lower "
        "features move little",
    ),
    ("large", "moderate"): ("full", {}, "full fine-tuning with discriminative LRs"),
    ("large", "far"): (
        "full",
        {"model.lr": 3e-3, "model.lr_decay": 0.9},
        "fine-tune every layer with a higher LR and little decay, so the lower layers can move "
        "away from the pretrained features",
    ),
}


@dataclass
class Decision:
    """Auto's pick: a strategy config, the values it wants, and the reasons, in sentences."""

    chosen: str
    strategy_args: dict[str, Any]  # overrides of the chosen strategy's node (initial_groups...)
    settings: dict[str, Any]  # dotted config key -> value auto wants
    reasons: list[str]
    signals: dict[str, Any]
    size: str = ""
    domain: str = ""
    applied: dict[str, Any] = field(default_factory=dict)
    kept: dict[str, Any] = field(default_factory=dict)
    table_pick: str = ""  # the table's choice (the race may pick another)
    race: dict[str, Any] | None = None  # thawkit.finetune.auto.race's record, None = no race
    schedule: dict[str, Any] = field(default_factory=dict)  # budget.fit_schedule's changes
    wiseft: dict[str, Any] = field(default_factory=dict)  # {"on": bool, "reason": why}
    # Fit the unfreezing schedule into the run's epochs (budget.fit_schedule); False: run it as
    # it is, so a shorter budget trains fewer groups (small data: docs/strategies.md).
    compress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AutoStrategy:
    """The `strategy=auto` node: thresholds of the decision table and the probe's budget.

    Args:
        name: `auto`.
        small_per_class: fewer training images per class (median) than this is small data.
        large_per_class: more than this is large data (in between: medium).
        huge_per_class: at least this many, with a very far domain, trains from scratch.
        near: domain score at or above this is a near domain.
        far: domain score below this is a far domain (in between: moderate).
        very_far: domain score below this counts as very far (scratch, with huge data).
        max_images: at most this many training images go through the probe (an even share per
            class, at least 2 per class); 0 = no probe (the domain counts as moderate).
        baseline: also probe randomly initialised copies of the backbone, and score the domain
            by how much better the pretrained features do; false = the pretrained probe's
            score alone is the domain score.
        probe_repeats: k-fold repeats of each probe (`thawkit.finetune.auto.probe`: one probe
            on 100 images is noisy).
        baseline_inits: random inits the baseline averages over.
        keep: config keys auto must leave as configured even when not given on the command
            line (e.g. [trainer.max_epochs] in an experiment file).
        race: race the table's pick against `candidates` on a slice of the training images
            (successive halving, `thawkit.finetune.auto.race`) and train the winner.
        candidates: strategy config names that race the table's pick.
        race_images: training images in the race (an even share per class).
        race_holdout: the share of them held out to score the race.
        race_epochs: epochs of every race training.
        wiseft: when auto turns WiSE-FT on (`wiseft=true`, after the race has picked): `off`;
            `shared_start` (lp_ft, two_phase, gradual: head-only epochs first); `backbone`
            (every pick that trains backbone layers). Never for feature_extraction or scratch.
    """

    def __init__(
        self,
        name: str = AutoSchema.name,
        small_per_class: int = AutoSchema.small_per_class,
        large_per_class: int = AutoSchema.large_per_class,
        huge_per_class: int = AutoSchema.huge_per_class,
        near: float = AutoSchema.near,
        far: float = AutoSchema.far,
        very_far: float = AutoSchema.very_far,
        max_images: int = AutoSchema.max_images,
        baseline: bool = AutoSchema.baseline,
        probe_repeats: int = AutoSchema.probe_repeats,
        baseline_inits: int = AutoSchema.baseline_inits,
        keep: Sequence[str] = (),
        race: bool = AutoSchema.race,
        candidates: Sequence[str] = ("full", "lp_ft"),
        race_images: int = AutoSchema.race_images,
        race_holdout: float = AutoSchema.race_holdout,
        race_epochs: int = AutoSchema.race_epochs,
        wiseft: str = AutoSchema.wiseft,
    ) -> None:
        if not 0 < small_per_class <= large_per_class <= huge_per_class:
            raise ValueError(
                "strategy.small_per_class <= large_per_class <= huge_per_class must hold, all > 0"
                f"; got {small_per_class}, {large_per_class}, {huge_per_class}"
            )
        if not 0 <= very_far <= far <= near <= 1:
            raise ValueError(
                "strategy.very_far <= far <= near must hold, all in [0, 1]; "
                f"got {very_far}, {far}, {near}"
            )
        if max_images < 0:
            raise ValueError(f"strategy.max_images={max_images} must be >= 0 (0 = no probe)")
        if min(probe_repeats, baseline_inits) < 1:
            raise ValueError(
                f"strategy.probe_repeats={probe_repeats} and baseline_inits={baseline_inits} "
                "must be >= 1"
            )
        unknown = [k for k in keep if k not in FILLABLE]
        if unknown:
            raise ValueError(f"strategy.keep={unknown}: auto only fills {list(FILLABLE)}")
        bad = [c for c in candidates if c in (AUTO, "scratch")]
        if bad:
            raise ValueError(
                f"strategy.candidates={list(candidates)}: {bad} cannot race (auto chooses; "
                "scratch discards the pretrained weights the race starts from)"
            )
        self.race, self.candidates = race, list(candidates)
        self.race_images, self.race_holdout, self.race_epochs = (
            race_images,
            race_holdout,
            race_epochs,
        )
        if wiseft not in WISEFT_WHEN:
            raise ValueError(f"strategy.wiseft={wiseft!r}: allowed {list(WISEFT_WHEN)}")
        self.wiseft = wiseft
        self.name = name
        self.small_per_class, self.large_per_class = small_per_class, large_per_class
        self.huge_per_class = huge_per_class
        self.near, self.far, self.very_far = near, far, very_far
        self.max_images = max_images
        self.baseline = baseline
        self.probe_repeats, self.baseline_inits = probe_repeats, baseline_inits
        self.keep = list(keep)

    def size(self, signals: Signals) -> str:
        n = signals.images_per_class
        if n < self.small_per_class:
            return "small"
        return "large" if n > self.large_per_class else "medium"

    def domain(self, signals: Signals) -> str:
        s = signals.domain_score
        if s is None:
            return "unknown"
        if s >= self.near:
            return "near"
        return "moderate" if s >= self.far else "far"

    def decide(self, signals: Signals, num_groups: int, weights_given: bool = False) -> Decision:
        """The decision table applied to `signals` (pure: no data, no model).

        Args:
            signals: the measured (or constructed) signals.
            num_groups: layer groups of the backbone (partial/gradual train a share of them).
            weights_given: `model.weights` was set explicitly: never pick scratch (which
                replaces the weights by a random init).
        """
        size, domain = self.size(signals), self.domain(signals)
        reasons = [self._size_reason(signals, size), self._domain_reason(signals, domain)]
        key = domain if domain != "unknown" else "moderate"
        very_far = signals.domain_score is not None and signals.domain_score < self.very_far
        huge = signals.images_per_class >= self.huge_per_class
        if not signals.pretrained:
            chosen, args, settings = "scratch", {}, dict(SCRATCH)
            why = (
                "model.weights=none: there are no pretrained features to transfer, so every "
                "layer trains from its random initialisation at one learning rate"
            )
        elif huge and very_far and not weights_given:
            chosen, args, settings = "scratch", {}, {**SCRATCH, "model.weights": "none"}
            why = (
                f"huge data (>= {self.huge_per_class} per class) and a very far domain "
                f"(score < {self.very_far}): the data can train every layer and the pretrained "
                "features barely help, so train from scratch"
            )
        else:
            chosen, lrs, why = TABLE[size, key]
            settings = {**DEFAULT_LRS, **lrs}
            third = max(1, math.ceil(num_groups / 3))
            args = {
                ("small", "moderate"): {"initial_groups": 0, "every_n_epochs": 1},
                ("small", "far"): {"initial_groups": third},
                ("medium", "moderate"): {"initial_groups": 0, "every_n_epochs": 1},
            }.get((size, key), {})
            why = why.format(third=third, groups=num_groups)
            if huge and very_far:
                why += " (scratch would fit, but model.weights was given explicitly)"
        epochs = SCRATCH_EPOCHS if chosen == "scratch" else EPOCHS[size]
        if "every_n_epochs" in args:
            groups = args.get("max_groups") or num_groups
            epochs = max(epochs, args["every_n_epochs"] * groups + 2)
        settings["trainer.max_epochs"] = epochs
        reasons.append(f"{self._table_cell(size, domain)} -> {chosen}: {why}.")
        return Decision(
            # Small data's depth grows with the epochs instead of being compressed into them.
            compress=size != "small",
            table_pick=chosen,
            chosen=chosen,
            strategy_args=args,
            settings=settings,
            reasons=reasons,
            signals=asdict(signals),
            size=size,
            domain=domain,
        )

    def alternative(self, decision: Decision, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(strategy args, settings) of strategy `name` as a race candidate beside `decision`:
        the table's own for its pick; otherwise the default LRs and the data size's epochs."""
        if name == decision.chosen:
            return dict(decision.strategy_args), dict(decision.settings)
        settings: dict[str, Any] = dict(DEFAULT_LRS)
        settings["trainer.max_epochs"] = EPOCHS.get(decision.size, EPOCHS["medium"])
        return {}, settings

    def race_names(self, decision: Decision) -> list[str]:
        """The table's pick, then `candidates`, then feature_extraction where the domain is
        near: a short race favours a head on frozen features wherever it runs (on the far digits
        it beat `full`), so it races only where the features already fit the task (the evidence:
        docs/strategies.md, "The race")."""
        extra = ["feature_extraction"] if decision.domain == "near" else []
        return list(dict.fromkeys([decision.chosen, *self.candidates, *extra]))

    def weight_space(self, decision: Decision) -> None:
        """Turn WiSE-FT on or not for the final pick (after the race), in place: the setting
        `wiseft=true` when on, `decision.wiseft` ({"on", "reason"}) and a reason line.

        WiSE-FT chooses its `a` on the validation split with `a = 1` (the fine-tuned model
        itself) in the grid, so on validation it never ends below the fine-tuned model; `a = 0`
        is the linear probe on the pretrained features, a floor when fine-tuning a few images
        for a few epochs did worse. Its cost is one BatchNorm update and one validation pass per
        `a` after fit (thawkit.run.wiseft)."""
        on, why = wiseft_choice(decision.chosen, self.wiseft)
        if on:
            decision.settings["wiseft"] = True
        else:
            decision.settings.pop("wiseft", None)
        decision.wiseft = {"on": on, "reason": why}
        decision.reasons = [r for r in decision.reasons if not r.startswith("WiSE-FT: ")]
        decision.reasons.append(f"WiSE-FT: {why}.")

    @staticmethod
    def _table_cell(size: str, domain: str) -> str:
        return f"{size} data + {domain} domain"

    def _size_reason(self, s: Signals, size: str) -> str:
        bounds = {
            "small": f"< {self.small_per_class}",
            "medium": f"{self.small_per_class}..{self.large_per_class}",
            "large": f"> {self.large_per_class}",
        }
        return (
            f"Data size: {s.images_per_class:g} training images per class (median of "
            f"{s.num_classes} classes, smallest {s.min_images_per_class}, {s.train_images} "
            f"in all) is {size} ({bounds[size]} per class)."
        )

    def _domain_reason(self, s: Signals, domain: str) -> str:
        if s.domain_score is None:
            return f"Domain distance: unknown ({s.probe_note}); treated as moderate."
        bound = {
            "near": f">= {self.near}",
            "moderate": f"{self.far}..{self.near}",
            "far": f"< {self.far}",
        }[domain]
        text = (
            f"Domain distance: a linear probe on the pretrained backbone's frozen features of "
            f"{s.probe_images} training images ({s.probe_folds}-fold"
            + (f", {s.probe_repeats} repeats" if s.probe_repeats > 1 else "")
            + f") reached {s.probe_acc:.1%} held-out accuracy against {s.probe_chance:.1%} "
            f"chance (score {s.probe_score:.2f})"
        )
        if s.baseline_score is not None:
            inits = len(s.baseline_scores or [0])
            copies = (
                f"{inits} randomly initialised copies"
                if inits > 1
                else "a randomly initialised copy"
            )
            text += (
                f"; {copies} reached {s.baseline_acc:.1%}{' on average' if inits > 1 else ''} "
                f"(score {s.baseline_score:.2f}), so pretraining closes {s.domain_score:.0%} of "
                "the gap that random features leave"
            )
        return (
            f"{text}: domain score {s.domain_score:.2f}, a {domain} domain ({bound}); measured "
            f"in {s.probe_time_s:.1f} s."
        )
