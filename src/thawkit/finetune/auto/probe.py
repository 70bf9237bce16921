"""Measuring what auto decides on: data size, and the domain distance by linear probes.

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
- **Averaging** (`repeats`, `inits`): on a hundred images one probe is noisy, and the baseline
  moves most. With one random init and one 5-fold split, the domain score of 100 brain MRI
  images (96 px, Lite0) ranged 0.15 to 0.54 over seeds, across the far/moderate line, and the
  digits' 0.12 to 0.29. So the k-fold is repeated `repeats` times with reshuffled folds (both
  probes, the same folds; about 0.1 s per ridge fit on 510 images' features), and the baseline
  is the mean over `inits` random inits (a forward pass each). At 10 repeats and 5 inits, over
  seeds 0 to 4: brain MRI 0.37 to 0.45, the digits 0.00 to 0.10 (docs/strategies.md, "What it
  measures").

Nothing here decides (`thawkit.finetune.auto.policy`) or touches the config
(`thawkit.finetune.auto.resolve`).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# Ridge penalty of the probe on standardised features (1.0 overfit 1280-d features of 400
# images: 0.869 held-out accuracy on digits, against 0.892 at 100 and at 1000).
PROBE_ALPHA = 100.0


@dataclass
class Signals:
    """What auto measured. `domain_score` is None when no probe ran (`probe_note` says why).

    `probe_*`: the linear probe on the pretrained backbone's features; `baseline_*`: the same
    probe on randomly initialised copies of the backbone, averaged (None when `baseline` is
    off).
    """

    num_classes: int
    images_per_class: float  # median over classes, training split
    min_images_per_class: int
    train_images: int
    pretrained: bool = True
    layer_groups: int = 0  # of the probed backbone (0 = not built)
    probe_images: int = 0
    probe_folds: int = 0
    probe_repeats: int = 0  # k-fold repeats of each probe
    probe_acc: float | None = None
    probe_chance: float | None = None
    probe_score: float | None = None
    baseline_acc: float | None = None
    baseline_score: float | None = None  # mean over the random inits (baseline_scores)
    baseline_scores: list[float] | None = None
    domain_score: float | None = None
    probe_time_s: float = 0.0
    probe_note: str = ""


def probe_score(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | Sequence[int],
    folds: int = 5,
    seed: int = 0,
    repeats: int = 1,
) -> tuple[float, float, float, int]:
    """Held-out accuracy of a linear probe on `features`, normalised against chance.

    A ridge-regularised linear classifier (scikit-learn's `RidgeClassifier`, closed form) on
    standardised features, scored by stratified k-fold cross-validation (k = `folds`, at most
    the smallest class's count, at least 2), repeated `repeats` times with reshuffled folds
    (the accuracy is the mean over all k * repeats held-out folds). Ridge rather than
    logistic regression: on 510 digits' EfficientNet-Lite0 features it scored 0.892 against
    0.908 held-out accuracy in 2.4 s against 23.6 s (5 folds, 2 busy CPU cores), and 0.116 on
    shuffled labels (chance 0.1).

    Returns:
        (accuracy, chance, score, k): chance is the majority class's share; score is
        (accuracy - chance) / (1 - chance), clipped to [0, 1].

    Raises:
        ValueError: fewer than 2 classes, or a class with fewer than 2 samples.
    """
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
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
    cv = RepeatedStratifiedKFold(n_splits=k, n_repeats=max(1, repeats), random_state=seed)
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
    cfg: DictConfig,
    datamodule: Any,
    max_images: int,
    seed: int = 0,
    baseline: bool = True,
    repeats: int = 10,
    inits: int = 5,
) -> Signals:
    """Data size from `datamodule`'s training split, and the linear probes' domain score.

    Args:
        cfg: the run's config (model.backbone, model.weights, trainer.accelerator).
        datamodule: a set-up `ImageFolderDataModule`.
        max_images: at most this many training images go through the probe.
        seed: picks the images and the folds (and the baseline's random inits).
        baseline: also probe randomly initialised copies of the backbone.
        repeats: k-fold repeats (reshuffled folds) of each probe.
        inits: random inits the baseline averages over.
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
        _probe(cfg, datamodule, signals, max_images, seed, baseline, max(1, repeats), max(1, inits))
    return signals


def _features(backbone: Any, dataset: Any, batch_size: int, device: torch.device) -> Any:
    from thawkit.data.feature_cache import extract_features

    return extract_features(backbone.eval().to(device), dataset, batch_size, device=device)


def _probe(
    cfg: DictConfig,
    datamodule: Any,
    signals: Signals,
    max_images: int,
    seed: int,
    baseline: bool,
    repeats: int,
    inits: int,
) -> None:
    from thawkit.console import quiet_loggers
    from thawkit.data.datasets import ImageDataset
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
        f", and {inits} randomly initialised cop{'y' if inits == 1 else 'ies'}" if baseline else "",
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
    acc, chance, score, k = probe_score(features, labels, seed=seed, repeats=repeats)
    signals.probe_images, signals.probe_folds, signals.probe_repeats = len(subset), k, repeats
    signals.probe_acc, signals.probe_chance = round(acc, 4), round(chance, 4)
    signals.probe_score = round(score, 4)
    if baseline:
        scores = []
        with torch.random.fork_rng(devices=[]):  # the run's own random stream stays untouched
            torch.manual_seed(seed)
            for _ in range(inits):  # each build draws the next random init
                with quiet_loggers("thawkit.models.weights"):  # a baseline, not the run's backbone
                    random_init = build_backbone(name, "none")
                features, _ = _features(random_init, dataset, batch, device)
                del random_init
                scores.append(probe_score(features, labels, seed=seed, repeats=repeats))
        signals.baseline_acc = round(statistics.fmean(s[0] for s in scores), 4)
        signals.baseline_score = round(statistics.fmean(s[2] for s in scores), 4)
        signals.baseline_scores = [round(s[2], 4) for s in scores]
    signals.domain_score = round(domain_score(score, signals.baseline_score), 4)
    signals.probe_time_s = round(time.perf_counter() - start, 3)
