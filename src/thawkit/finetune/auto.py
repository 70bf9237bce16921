"""`strategy=auto`: pick the strategy, learning rates and epochs from the data, and say why.

The textbook decision guide for transfer learning (CS231n's transfer-learning notes; Yosinski
et al. 2014, "How transferable are features in deep neural networks?") turns on two questions:
how much data is there, and how close is it to what the backbone was pretrained on?

- **Data size**: training images per class (median over the classes of the training split).
- **Domain distance**: linear probes. The frozen pretrained backbone (eval mode) computes
  pooled features of at most `max_images` training images (an even share per class); a
  ridge-regularised linear classifier (scikit-learn, standardised features, stratified k-fold)
  classifies them. Its held-out accuracy, normalised against chance (the majority class's share
  of the probed images, 1/C when balanced), is the probe score `(acc - chance) / (1 - chance)`.
  The same probe on a randomly initialised copy of the backbone gives a baseline score: what
  any convolutional features of this architecture get. The domain score is the share of the
  headroom left by random features that pretraining closes,
  `(pretrained - baseline) / (1 - baseline)`, in [0, 1]: 1 = the pretrained features fit this
  task far better than random ones (near domain), 0 = pretraining adds nothing (far domain).
  Why the baseline: the pretrained score alone could not tell the default digits (far from
  ImageNet photos; full fine-tuning beats two_phase there) from ants-vs-bees photos (ImageNet
  classes): 0.88 against 0.89 with EfficientNet-Lite0. Random features score 0.87 on digits and
  0.15 on the photos, so the domain scores are 0.07 (far) and 0.87 (near).
  (`baseline: false` skips the second pass and uses the pretrained score alone.)

The decision table (sizes per class: small < `small_per_class` <= medium <= `large_per_class`
< large; domain: near >= `near` > moderate >= `far` > far):

| data \\ domain | near               | moderate                    | far                      |
|---------------|--------------------|-----------------------------|--------------------------|
| small         | feature_extraction | partial (top quarter), reg. | gradual (top half), reg. |
| medium        | two_phase          | gradual                     | full, lr_decay 0.9       |
| large         | full, lr_decay 0.7 | full                        | full, higher LR, 0.9     |

Huge data (>= `huge_per_class`) with a very far domain (< `very_far`) trains from scratch;
`model.weights=none` (nothing pretrained) always does. "reg." = stronger regularisation
(weight decay 0.05, label smoothing 0.1): few images, more trainable layers.

What auto sets and what it leaves alone: the strategy node always (the user asked for auto);
`model.lr`, `model.lr_decay`, `model.weight_decay`, `model.label_smoothing`,
`trainer.max_epochs` (and `model.weights` for scratch) unless the key was given on the command
line (`trainer.max_epochs=3 strategy=auto` keeps 3 epochs; sweep values count too) or is listed
in `strategy.keep` (for experiment files and configs built in code). The choice is written to
`<run dir>/auto.json` and reused when the run resumes, so a resumed run trains as it started.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from thawkit import CONF_DIR
from thawkit.atomic import write_json_atomic
from thawkit.config.checks import layer_group_names, validate

log = logging.getLogger(__name__)

AUTO = "auto"
TARGET = "thawkit.finetune.auto.AutoStrategy"
RECORD = "auto.json"
# The keys auto may fill (dotted config paths); the strategy node itself is always replaced.
FILLABLE = (
    "model.lr",
    "model.lr_decay",
    "model.weight_decay",
    "model.label_smoothing",
    "model.weights",
    "trainer.max_epochs",
)
# Epochs by data size: few images give few steps per epoch, so small data gets more epochs
# (early stopping on val/loss still ends a run that stops improving).
EPOCHS = {"small": 20, "medium": 12, "large": 8}
SCRATCH_EPOCHS = 30  # random init needs many more passes than fine-tuning
# Ridge penalty of the probe on standardised features (1.0 overfit 1280-d features of 400
# images: 0.869 held-out accuracy on digits, against 0.892 at 100 and at 1000).
PROBE_ALPHA = 100.0
STRONG_REG = {"model.weight_decay": 0.05, "model.label_smoothing": 0.1}
DEFAULT_LRS = {"model.lr": 2e-3, "model.lr_decay": 0.8}  # the cells below name what differs
SCRATCH = {"model.lr": 3e-3, "model.lr_decay": 1.0}
# (data size, domain) -> (strategy, settings that differ from DEFAULT_LRS, why). The numbers of
# layer groups trained come from the backbone: {quarter}, {half} of its {groups}.
TABLE: dict[tuple[str, str], tuple[str, dict[str, float], str]] = {
    ("small", "near"): (
        "feature_extraction",
        {"model.lr": 5e-3},
        "the pretrained features already separate the classes; training backbone layers on "
        "few images would overfit them, so train a linear classifier on the frozen features "
        "(a larger head LR suits a lone linear layer)",
    ),
    ("small", "moderate"): (
        "partial",
        {"model.lr_decay": 0.5, **STRONG_REG},
        "train the top {quarter} of {groups} layer groups (task-specific features) and keep the "
        "lower ones (generic edges and textures) frozen, with stronger regularisation against "
        "overfitting few images",
    ),
    ("small", "far"): (
        "gradual",
        {"model.lr_decay": 0.7, **STRONG_REG},
        "the top features need to change, but few images cannot retrain the whole backbone; "
        "unfreeze from the top, one group every 2 epochs, up to {half} of {groups} groups "
        "(lower layers keep generic features), with stronger regularisation",
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


# ----------------------------------------------------------------- signals
@dataclass
class Signals:
    """What auto measured. `domain_score` is None when no probe ran (`probe_note` says why).

    `probe_*`: the linear probe on the pretrained backbone's features; `baseline_*`: the same
    probe on a randomly initialised copy of the backbone (None when `baseline` is off).
    """

    num_classes: int
    images_per_class: float  # median over classes, training split
    min_images_per_class: int
    train_images: int
    pretrained: bool = True
    layer_groups: int = 0  # of the probed backbone (0 = not built)
    probe_images: int = 0
    probe_folds: int = 0
    probe_acc: float | None = None
    probe_chance: float | None = None
    probe_score: float | None = None
    baseline_acc: float | None = None
    baseline_score: float | None = None
    domain_score: float | None = None
    probe_time_s: float = 0.0
    probe_note: str = ""


def probe_score(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | Sequence[int],
    folds: int = 5,
    seed: int = 0,
) -> tuple[float, float, float, int]:
    """Held-out accuracy of a linear probe on `features`, normalised against chance.

    A ridge-regularised linear classifier (scikit-learn's `RidgeClassifier`, closed form) on
    standardised features, scored by stratified k-fold cross-validation (k = `folds`, at most
    the smallest class's count, at least 2). Ridge rather than logistic regression: on 510
    digits' EfficientNet-Lite0 features it scored 0.892 against 0.908 held-out accuracy in
    2.4 s against 23.6 s (5 folds, 2 busy CPU cores), and 0.116 on shuffled labels (chance 0.1).

    Returns:
        (accuracy, chance, score, k): chance is the majority class's share; score is
        (accuracy - chance) / (1 - chance), clipped to [0, 1].

    Raises:
        ValueError: fewer than 2 classes, or a class with fewer than 2 samples.
    """
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = features.numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    y = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        raise ValueError(
            "a linear probe needs >= 2 classes with >= 2 samples each; "
            f"got counts {counts.tolist()}"
        )
    k = int(max(2, min(folds, counts.min())))
    probe = make_pipeline(StandardScaler(), RidgeClassifier(alpha=PROBE_ALPHA))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    acc = float(np.mean(cross_val_score(probe, x, y, cv=cv, scoring="accuracy")))
    chance = float(counts.max() / counts.sum())
    score = min(1.0, max(0.0, (acc - chance) / (1.0 - chance)))
    return acc, chance, score, k


def probe_subset(
    samples: Sequence[tuple[str, int]], num_classes: int, max_images: int, seed: int = 0
) -> list[tuple[str, int]]:
    """An even share of at most `max_images` samples per class (at least 2 per class)."""
    per_class = max(2, max_images // max(1, num_classes))
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[tuple[str, int]]] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    picked: list[tuple[str, int]] = []
    for label in sorted(by_class):
        group = by_class[label]
        idx = rng.permutation(len(group))[:per_class]
        picked += [group[i] for i in sorted(idx)]
    return picked


def domain_score(pretrained: float, baseline: float | None) -> float:
    """How much of the headroom that random features leave the pretrained features close.

    (pretrained - baseline) / (1 - baseline), clipped to [0, 1], with both the probe scores
    (normalised against chance). Without a baseline: the pretrained probe's score itself.
    Random features that already solve the task (baseline 1) leave nothing to close: 1.
    """
    if baseline is None:
        return pretrained
    if baseline >= 1.0:
        return 1.0
    return min(1.0, max(0.0, (pretrained - baseline) / (1.0 - baseline)))


def measure(
    cfg: DictConfig, datamodule: Any, max_images: int, seed: int = 0, baseline: bool = True
) -> Signals:
    """Data size from `datamodule`'s training split, and the linear probes' domain score.

    Args:
        cfg: the run's config (model.backbone, model.weights, trainer.accelerator).
        datamodule: a set-up `ImageFolderDataModule`.
        max_images: at most this many training images go through the probe.
        seed: picks the images and the folds (and the baseline's random init).
        baseline: also probe a randomly initialised copy of the backbone.
    """
    train = datamodule.splits["train"]
    counts = [0] * datamodule.num_classes
    for _, y in train:
        counts[y] += 1
    signals = Signals(
        num_classes=datamodule.num_classes,
        images_per_class=float(statistics.median(counts)),
        min_images_per_class=min(counts),
        train_images=len(train),
        pretrained=str(cfg.model.weights) != "none",
    )
    if not signals.pretrained:
        signals.probe_note = "no probe: model.weights=none, nothing pretrained to measure"
    elif max_images <= 0:
        signals.probe_note = "no probe: strategy.max_images=0"
    elif min(counts) < 2:
        signals.probe_note = "no probe: a class has fewer than 2 training images"
    else:
        _probe(cfg, datamodule, signals, max_images, seed, baseline)
    return signals


def _features(backbone: Any, dataset: Any, batch_size: int, device: torch.device) -> Any:
    from thawkit.data.feature_cache import extract_features

    return extract_features(backbone.eval().to(device), dataset, batch_size, device=device)


def _probe(
    cfg: DictConfig, datamodule: Any, signals: Signals, max_images: int, seed: int, baseline: bool
) -> None:
    from thawkit.console import quiet_loggers
    from thawkit.data.datamodule import ImageDataset
    from thawkit.data.transforms import eval_transform
    from thawkit.models.backbone import build_backbone

    start = time.perf_counter()
    name, batch = str(cfg.model.backbone), datamodule.batch_size
    subset = probe_subset(datamodule.splits["train"], signals.num_classes, max_images, seed)
    log.info(
        "strategy=auto: probing %d training images with %s's frozen features (weights=%s%s)",
        len(subset),
        name,
        cfg.model.weights,
        ", and a randomly initialised copy" if baseline else "",
    )
    use_cuda = torch.cuda.is_available() and cfg.trainer.get("accelerator") != "cpu"
    device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    dataset = ImageDataset(
        subset, eval_transform(datamodule.preprocessing, datamodule.image_size), None
    )
    backbone = build_backbone(name, str(cfg.model.weights))
    signals.layer_groups = len(backbone.groups)
    features, labels = _features(backbone, dataset, batch, device)
    del backbone
    acc, chance, score, k = probe_score(features, labels, seed=seed)
    signals.probe_images, signals.probe_folds = len(subset), k
    signals.probe_acc, signals.probe_chance = round(acc, 4), round(chance, 4)
    signals.probe_score = round(score, 4)
    if baseline:
        with torch.random.fork_rng(devices=[]):  # the run's own random stream stays untouched
            torch.manual_seed(seed)
            with quiet_loggers("thawkit.models.weights"):  # the baseline, not the run's backbone
                random_init = build_backbone(name, "none")
        features, _ = _features(random_init, dataset, batch, device)
        del random_init
        base_acc, _, base_score, _ = probe_score(features, labels, seed=seed)
        signals.baseline_acc, signals.baseline_score = round(base_acc, 4), round(base_score, 4)
    signals.domain_score = round(domain_score(score, signals.baseline_score), 4)
    signals.probe_time_s = round(time.perf_counter() - start, 3)


# ----------------------------------------------------------------- the decision
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
        baseline: also probe a randomly initialised copy of the backbone, and score the domain
            by how much better the pretrained features do (doubles the probe's cost); false =
            the pretrained probe's score alone is the domain score.
        keep: config keys auto must leave as configured even when not given on the command
            line (e.g. [trainer.max_epochs] in an experiment file).
    """

    def __init__(
        self,
        name: str = AUTO,
        small_per_class: int = 100,
        large_per_class: int = 1000,
        huge_per_class: int = 10000,
        near: float = 0.75,
        far: float = 0.4,
        very_far: float = 0.1,
        max_images: int = 512,
        baseline: bool = True,
        keep: Sequence[str] = (),
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
        unknown = [k for k in keep if k not in FILLABLE]
        if unknown:
            raise ValueError(f"strategy.keep={unknown}: auto only fills {list(FILLABLE)}")
        self.name = name
        self.small_per_class, self.large_per_class = small_per_class, large_per_class
        self.huge_per_class = huge_per_class
        self.near, self.far, self.very_far = near, far, very_far
        self.max_images = max_images
        self.baseline = baseline
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
            quarter, half = max(1, round(num_groups / 4)), max(1, math.ceil(num_groups / 2))
            args = {
                ("small", "moderate"): {"initial_groups": quarter},
                ("small", "far"): {"initial_groups": 0, "every_n_epochs": 2, "max_groups": half},
                ("medium", "moderate"): {"initial_groups": 0, "every_n_epochs": 1},
            }.get((size, key), {})
            why = why.format(quarter=quarter, half=half, groups=num_groups)
            if huge and very_far:
                why += " (scratch would fit, but model.weights was given explicitly)"
        epochs = SCRATCH_EPOCHS if chosen == "scratch" else EPOCHS[size]
        if "every_n_epochs" in args:
            groups = args.get("max_groups") or num_groups
            epochs = max(epochs, args["every_n_epochs"] * groups + 2)
        settings["trainer.max_epochs"] = epochs
        reasons.append(f"{self._table_cell(size, domain)} -> {chosen}: {why}.")
        return Decision(
            chosen=chosen,
            strategy_args=args,
            settings=settings,
            reasons=reasons,
            signals=asdict(signals),
            size=size,
            domain=domain,
        )

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
            f"{s.probe_images} training images ({s.probe_folds}-fold) reached {s.probe_acc:.1%} "
            f"held-out accuracy against {s.probe_chance:.1%} chance (score {s.probe_score:.2f})"
        )
        if s.baseline_score is not None:
            text += (
                f"; a randomly initialised copy reached {s.baseline_acc:.1%} (score "
                f"{s.baseline_score:.2f}), so pretraining closes {s.domain_score:.0%} of the gap "
                "that random features leave"
            )
        return (
            f"{text}: domain score {s.domain_score:.2f}, a {domain} domain ({bound}); measured "
            f"in {s.probe_time_s:.1f} s."
        )


# ----------------------------------------------------------------- resolving a config
def explicit_keys(keep: Sequence[str] = ()) -> set[str]:
    """Config keys the user set: this command line's `key=value` overrides, plus `keep`."""
    keys = set(keep)
    if HydraConfig.initialized():
        overrides = [str(o) for o in HydraConfig.get().overrides.task]
        for override in OverridesParser.create().parse_overrides(overrides):
            keys.add(override.key_or_group)
    return keys


def _conf_dir() -> Path:
    """The primary config folder (Hydra's main config source; else the repository's conf/)."""
    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                return Path(source.path)
    return CONF_DIR


def strategy_config(name: str) -> DictConfig:
    """conf/strategy/<name>.yaml as loaded (its `_global_` keys: strategy, maybe model)."""
    path = _conf_dir() / "strategy" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"strategy=auto picked {name} but {path} is missing")
    return OmegaConf.load(path)


def apply(cfg: DictConfig, decision: Decision, explicit: set[str]) -> None:
    """Write the decision into `cfg` (in place): the strategy node, and every setting whose
    key the user did not set (those are recorded in `decision.kept` instead)."""
    chosen = strategy_config(decision.chosen)
    node = OmegaConf.merge(chosen.strategy, decision.strategy_args)
    node.name = AUTO  # summaries and sweeps see `auto`; summary.json's auto.chosen names the pick
    # A strategy file's other keys (scratch: model.weights, model.lr_decay) are settings too.
    extra = {
        f"{top}.{k}": v for top, sub in chosen.items() if top != "strategy" for k, v in sub.items()
    }
    settings = {**extra, **decision.settings}
    decision.applied, decision.kept = {}, {}
    with open_dict(cfg):
        cfg.strategy = node
        for key, value in settings.items():
            if key in explicit:
                decision.kept[key] = OmegaConf.select(cfg, key)
            else:
                OmegaConf.update(cfg, key, value, merge=False, force_add=True)
                decision.applied[key] = value


def _log(decision: Decision) -> None:
    for reason in decision.reasons:
        log.info("strategy=auto: %s", reason)
    applied = ", ".join(f"{k}={v}" for k, v in decision.applied.items()) or "nothing"
    log.info("strategy=auto: chose %s; set %s", decision.chosen, applied)
    for key, value in decision.kept.items():
        wanted = decision.settings.get(key)
        log.info(
            "strategy=auto: kept %s=%s as given (auto would have picked %s)", key, value, wanted
        )


def resolve_auto(cfg: DictConfig, datamodule: Any) -> dict[str, Any] | None:
    """With `strategy=auto`, measure, decide and write the choice into `cfg` (in place, so
    the hyperparameters logged later are the ones used); else do nothing.

    Call it after the data module's setup and before the model and callbacks are built.
    A resumed run (`ckpt_path` set) reuses the choice recorded in its run dir's `auto.json`.

    Returns:
        The decision as recorded in summary.json's `auto` field, or None without auto.
    """
    node = cfg.get("strategy")
    if node is None or node.get("_target_") != TARGET:
        return None
    auto: AutoStrategy = instantiate(node, _convert_="all")
    explicit = explicit_keys(auto.keep)
    record = Path(cfg.paths.output_dir) / RECORD
    if cfg.get("ckpt_path") and record.is_file():
        saved = json.loads(record.read_text())
        decision = Decision(**{k: saved[k] for k in Decision.__dataclass_fields__ if k in saved})
        # Keys kept at the start stay kept: their values are in the resumed config already.
        explicit |= set(decision.kept)
        log.info("strategy=auto: resuming with the choice recorded in %s", record)
    else:
        seed = cfg.get("seed")
        seed = seed if seed is not None else 0
        signals = measure(cfg, datamodule, auto.max_images, seed, auto.baseline)
        groups = signals.layer_groups or len(layer_group_names(str(cfg.model.backbone)))
        decision = auto.decide(signals, groups, "model.weights" in explicit)
    apply(cfg, decision, explicit)
    _log(decision)
    validate(cfg)  # what auto wrote must pass the same checks as what a user writes
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        record.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, decision.to_dict())
    return decision.to_dict()
