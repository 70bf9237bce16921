"""A short measured race between candidate strategies: successive halving on a slice of the data.

The probe's domain score is one proxy; two sets with the same score can still want different
strategies (a far-domain microscopy set wanted `full`, a near-domain photo set `gradual`, both
scored about 0.5). The race measures instead of guessing. At most `images` training images (an
even share per class) are split, stratified, into a fit part and a held-out part (`holdout`;
the run's own validation split is never looked at). Successive halving (Jamieson & Talwalkar
2016) then runs in rungs: in rung r every surviving candidate trains from the pretrained
weights for `epochs` epochs (its unfreezing schedule fitted into them, as the run's will be) on
the first `n_r` fit images, `n_r` doubling up to the whole fit part in the last rung; the better
half by held-out accuracy (best epoch; ties: lower held-out loss, then the candidate's order,
the table's pick first) goes on, until one is left. The run then trains the winner on all its
data for its whole budget.

Deterministic by seed: the slices come from `numpy.random.default_rng(seed)`, every training
starts from `seed`, and the run's own random streams (Python, NumPy, torch) are restored after.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from thawkit.seeding import kept_random_state

log = logging.getLogger(__name__)

Sample = tuple[str, int]
# The loggers a race's trainings would fill with their own layer-group tables and banners.
QUIET = (
    "thawkit.finetune.module",
    "thawkit.finetune.unfreeze",
    "thawkit.finetune.param_groups",
    "thawkit.models.weights",
    "lightning.pytorch",
    "lightning.fabric",
)


@dataclass
class Candidate:
    """One strategy in the race: its config name, strategy node and model settings."""

    name: str
    node: dict[str, Any]  # the strategy node (its `_target_` and keys), fitted to the race
    settings: dict[str, Any]  # dotted `model.*` keys -> values for this candidate


def race_slices(
    samples: Sequence[Sample], max_images: int, holdout: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """(fit, held out): an even share of at most `max_images` per class, split stratified.

    The fit part is ordered round-robin over the classes, so every prefix is balanced (the
    early rungs train on a prefix). Each class keeps at least one image on either side.
    """
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    rng = np.random.default_rng(seed)
    per_class = max(2, max_images // max(1, len(by_class)))
    fit_lists, held = [], []
    for label in sorted(by_class):
        items = sorted(by_class[label])
        picked = [items[i] for i in rng.permutation(len(items))[:per_class]]
        n_held = min(len(picked) - 1, max(1, round(holdout * len(picked))))
        held += picked[:n_held]
        fit_lists.append(picked[n_held:])
    fit = [lst[i] for i in range(max(map(len, fit_lists))) for lst in fit_lists if i < len(lst)]
    return fit, held


def successive_halving(
    names: Sequence[str],
    fit: Sequence[Sample],
    evaluate: Callable[[str, Sequence[Sample]], dict[str, float]],
    min_images: int = 8,
) -> dict[str, Any]:
    """Race `names` (best first on ties) by `evaluate(name, fit_prefix)` -> {acc, loss, ...}.

    Returns the record: `rungs` (images, results per candidate, who went on) and `winner`.
    """
    survivors = list(dict.fromkeys(names))
    rungs = max(1, math.ceil(math.log2(len(survivors)))) if len(survivors) > 1 else 0
    record: dict[str, Any] = {"rungs": []}
    for r in range(rungs):
        n = min(len(fit), max(min_images, len(fit) >> (rungs - 1 - r)))
        results = {name: evaluate(name, fit[:n]) for name in survivors}
        ranked = sorted(
            survivors, key=lambda s: (-results[s]["acc"], results[s]["loss"], names.index(s))
        )
        survivors = ranked[: 1 if r == rungs - 1 else math.ceil(len(survivors) / 2)]
        record["rungs"].append({"images": n, "results": results, "kept": list(survivors)})
    record["winner"] = survivors[0]
    return record


def train_candidate(
    cfg: DictConfig,
    datamodule: Any,
    candidate: Candidate,
    fit: Sequence[Sample],
    held: Sequence[Sample],
    epochs: int,
    seed: int,
) -> dict[str, float]:
    """Train `candidate` on `fit` for `epochs`; its best held-out accuracy and that epoch's loss."""
    import lightning as L
    from hydra.utils import instantiate
    from torch.utils.data import RandomSampler

    from thawkit.console import quiet_loggers
    from thawkit.data.datasets import ImageDataset
    from thawkit.data.loaders import build_loader
    from thawkit.data.transforms import eval_transform, train_transform

    start = time.perf_counter()
    history: list[tuple[float, float]] = []

    class HeldOut(L.Callback):
        def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
            m = trainer.callback_metrics
            history.append((float(m["val/acc"]), float(m["val/loss"])))

    with kept_random_state():
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        pre, size = datamodule.preprocessing, datamodule.image_size
        train_set = ImageDataset(list(fit), train_transform(pre, size, **datamodule.augment))
        held_set = ImageDataset(list(held), eval_transform(pre, size))
        batch = datamodule.batch_size
        order = RandomSampler(train_set, generator=torch.Generator().manual_seed(seed))
        workers = 0  # a few hundred images: starting worker processes costs more than it saves
        train_loader = build_loader(train_set, batch, workers, order, len(fit) % batch == 1)
        held_loader = build_loader(held_set, batch, workers)
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        model_cfg.pop("reset_head", None)
        for key, value in candidate.settings.items():  # dotted model.* keys
            *parents, leaf = key.split(".")[1:]
            node = model_cfg
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        with quiet_loggers(*QUIET):
            model = instantiate(
                model_cfg,
                num_classes=datamodule.num_classes,
                class_names=datamodule.class_names,
                optimizer=instantiate(cfg.optimizer),
                scheduler=instantiate(cfg.scheduler),
            )
            use_cuda = torch.cuda.is_available() and cfg.trainer.get("accelerator") != "cpu"
            trainer = L.Trainer(
                max_epochs=epochs,
                accelerator="gpu" if use_cuda else "cpu",
                devices=1,
                precision=cfg.trainer.get("precision") or "32-true",
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                callbacks=[instantiate(candidate.node), HeldOut()],
            )
            trainer.fit(model, train_loader, held_loader)
    best = max(range(len(history)), key=lambda i: (history[i][0], -history[i][1]))
    return {
        "acc": round(history[best][0], 4),
        "loss": round(history[best][1], 4),
        "best_epoch": best,
        "time_s": round(time.perf_counter() - start, 2),
    }


def run_race(
    cfg: DictConfig,
    datamodule: Any,
    candidates: Sequence[Candidate],
    images: int,
    epochs: int,
    holdout: float,
    seed: int,
    train: Callable[..., dict[str, float]] = train_candidate,
) -> dict[str, Any]:
    """Successive halving of `candidates` (the table's pick first) on a slice of the train split.

    Returns the record for summary.json's `auto.race`: the slice sizes, epochs, seed, every
    rung's results, the winner and the race's time.
    """
    start = time.perf_counter()
    fit, held = race_slices(datamodule.splits["train"], images, holdout, seed)
    by_name: Mapping[str, Candidate] = {c.name: c for c in candidates}
    log.info(
        "strategy=auto: racing %s on %d + %d held-out training images, %d epochs each",
        ", ".join(by_name),
        len(fit),
        len(held),
        epochs,
    )

    def evaluate(name: str, prefix: Sequence[Sample]) -> dict[str, float]:
        result = train(cfg, datamodule, by_name[name], prefix, held, epochs, seed)
        log.info(
            "strategy=auto: race: %s on %d images: held-out acc %.3f, loss %.3f (%.1f s)",
            name, len(prefix), result["acc"], result["loss"], result.get("time_s", 0.0),
        )  # fmt: skip
        return result

    record = successive_halving(list(by_name), fit, evaluate)
    record.update(
        candidates=list(by_name),
        fit_images=len(fit),
        held_out_images=len(held),
        epochs=epochs,
        seed=seed,
        time_s=round(time.perf_counter() - start, 2),
    )
    return record
