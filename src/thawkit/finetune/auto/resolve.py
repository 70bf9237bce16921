"""Writing auto's choice into the run's config, and the order of a resolve: measure, decide,
apply, record.

What auto sets and what it leaves alone: the strategy node always (the user asked for auto);
`model.lr`, `model.lr_decay`, `model.weight_decay`, `model.label_smoothing`,
`trainer.max_epochs`, `wiseft` (when it turns WiSE-FT on) and `model.weights` (for scratch),
unless the key was given on the command line (`trainer.max_epochs=3 strategy=auto` keeps 3
epochs; sweep values count too) or is listed in `strategy.keep` (for experiment files and
configs built in code). The choice is written to `<run dir>/auto.json` and reused when the run
resumes, so a resumed run trains as it started.

The chosen strategy's own file (`strategy/<name>.yaml`) is read from Hydra's config search path
in Hydra's own order (the primary config folder first, then `--config-dir` and
`hydra.searchpath` folders, `file://` and `pkg://` alike), so a user's config folder serves
its strategies to auto as it does to `strategy=<name>`; without a running Hydra app (a config
composed in code), from the configs packaged with thawkit.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from thawkit import CONF_DIR
from thawkit.atomic import write_json_atomic
from thawkit.config.schema import load_option
from thawkit.finetune.auto.budget import fit_schedule, reached_groups
from thawkit.finetune.auto.policy import AUTO, AutoStrategy, Decision
from thawkit.finetune.auto.probe import measure
from thawkit.finetune.auto.race import Candidate, run_race
from thawkit.models.backbone import layer_group_names
from thawkit.seeding import kept_random_state

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)

# The `_target_` of src/thawkit/conf/strategy/auto.yaml: the public path of AutoStrategy.
TARGET = "thawkit.finetune.auto.AutoStrategy"
RECORD = "auto.json"


def explicit_keys(keep: Sequence[str] = ()) -> set[str]:
    """Config keys the user set: this command line's `key=value` overrides, plus `keep`."""
    keys = set(keep)
    if HydraConfig.initialized():
        overrides = [str(o) for o in HydraConfig.get().overrides.task]
        for override in OverridesParser.create().parse_overrides(overrides):
            keys.add(override.key_or_group)
    return keys


def config_roots() -> list[Traversable]:
    """The config folders Hydra searches, in its order; the packaged configs without Hydra.

    Hydra's `runtime.config_sources` lists the folders of the running app: `file://` folders
    and `pkg://` packages (Hydra's own `hydra.conf` and ConfigStore entries among them; those
    hold no strategy files and are passed over by the lookup).
    """
    if not HydraConfig.initialized():
        return [CONF_DIR]
    roots: list[Traversable] = []
    for source in HydraConfig.get().runtime.config_sources:
        if source.schema == "file":
            roots.append(Path(source.path))
        elif source.schema == "pkg":
            try:
                roots.append(resources.files(source.path.replace("/", ".")))
            except (ModuleNotFoundError, TypeError, ValueError):
                continue  # Hydra skips a package it cannot import as well
    return roots


def _strategy_files(name: str) -> Iterator[Traversable]:
    for root in config_roots():
        path = root.joinpath("strategy", f"{name}.yaml")
        if path.is_file():
            yield path


def strategy_config(name: str) -> DictConfig:
    """`strategy/<name>.yaml` on its schema (its `_global_` keys: strategy, maybe model), from
    the first config folder that has it (see `config_roots`)."""
    for path in _strategy_files(name):
        return load_option(path, "strategy")
    searched = ", ".join(str(root) for root in config_roots())
    raise FileNotFoundError(
        f"strategy=auto picked {name} but no config folder has strategy/{name}.yaml "
        f"(searched {searched})"
    )


def _extra(chosen: DictConfig) -> dict[str, Any]:
    """A strategy file's other keys (scratch: model.weights; lp_ft: model.head.kind), as
    dotted leaf keys: settings too (a leaf at a time, so a structured node is never replaced)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = node

    walk("", {k: v for k, v in OmegaConf.to_container(chosen).items() if k != "strategy"})
    return flat


def apply(cfg: DictConfig, decision: Decision, explicit: set[str], num_groups: int = 0) -> None:
    """Write the decision into `cfg` (in place): the strategy node, and every setting whose
    key the user did not set (those are recorded in `decision.kept` instead).

    The strategy's unfreezing schedule is fitted into the run's `trainer.max_epochs`
    (`budget.fit_schedule`, recorded in `decision.schedule`) when `num_groups` is known."""
    chosen = strategy_config(decision.chosen)
    node = OmegaConf.merge(chosen.strategy, decision.strategy_args)
    node.name = AUTO  # summaries and sweeps see `auto`; summary.json's auto.chosen names the pick
    settings = {**_extra(chosen), **decision.settings}
    epochs = int(
        OmegaConf.select(cfg, "trainer.max_epochs")
        if "trainer.max_epochs" in explicit
        else settings.get("trainer.max_epochs", cfg.trainer.max_epochs)
    )
    if num_groups:
        plain = OmegaConf.to_container(node)
        if decision.compress:
            changes, why = fit_schedule(plain, num_groups, epochs)
        else:
            changes, why = {}, _depth_by_epochs(plain, num_groups, epochs)
        node = OmegaConf.merge(node, changes)
        decision.schedule = {"epochs": epochs, "changes": changes, "reason": why}
        if why and not any(r.startswith("Budget: ") for r in decision.reasons):
            decision.reasons.append(f"Budget: {why}.")
    decision.applied, decision.kept = {}, {}
    with open_dict(cfg):
        cfg.strategy = node
        for key, value in settings.items():
            if key in explicit:
                decision.kept[key] = OmegaConf.select(cfg, key)
            else:
                OmegaConf.update(cfg, key, value, merge=False, force_add=True)
                decision.applied[key] = value


def _depth_by_epochs(node: dict[str, Any], num_groups: int, epochs: int) -> str | None:
    """The reason line of a schedule left as it is (`Decision.compress` false), None when it
    reaches every group it plans anyway."""
    if node.get("every_n_epochs") is None or int(node.get("initial_groups", 0)) < 0:
        return None
    reached = reached_groups(node, num_groups, epochs)
    if reached >= num_groups:
        return None
    return (
        f"with few images the schedule is not compressed into the {epochs} epochs: {reached} "
        f"of {num_groups} layer groups train by the last epoch and the lower ones keep their "
        "pretrained features (more epochs reach deeper)"
    )


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


def race(
    cfg: DictConfig,
    datamodule: Any,
    auto: AutoStrategy,
    decision: Decision,
    num_groups: int,
    seed: int,
) -> None:
    """Race the table's pick against `auto.race_names` and make the winner the decision (in
    place), with the race's record and a reason; nothing changes when the race cannot run."""
    if decision.size == "small":
        # The race holds out a third of the few images there are: a handful per class, one
        # image worth several points; measured, it switched small sets from the table's pick
        # to worse ones (docs/strategies.md).
        decision.race = {"skipped": "small data: the held-out part would be a few images"}
        return
    names = auto.race_names(decision)
    if len(names) < 2 or decision.signals.get("min_images_per_class", 0) < 3:
        # A class needs an image on either side of the race's split, and one more to train on.
        decision.race = {"skipped": "fewer than 2 candidates, or a class with < 3 images"}
        return
    plans: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    candidates = []
    for name in names:
        chosen = strategy_config(name)
        args, settings = auto.alternative(decision, name)
        plans[name] = (args, settings)
        node = OmegaConf.to_container(OmegaConf.merge(chosen.strategy, args), resolve=True)
        node.update(fit_schedule(node, num_groups, auto.race_epochs)[0])
        model = {k: v for k, v in {**_extra(chosen), **settings}.items() if k.startswith("model.")}
        candidates.append(Candidate(name, node, model))
    record = run_race(
        cfg, datamodule, candidates, auto.race_images, auto.race_epochs, auto.race_holdout, seed
    )
    winner = record["winner"]
    final = record["rungs"][-1]["results"]
    scores = ", ".join(f"{n} {r['acc']:.1%}" for n, r in final.items())
    decision.race = record
    if winner != decision.chosen:
        decision.chosen = winner
        decision.strategy_args, decision.settings = plans[winner]
    decision.reasons.append(
        f"Race: {len(names)} strategies trained {auto.race_epochs} epochs each on "
        f"{record['fit_images']} training images, scored on {record['held_out_images']} held "
        f"out (successive halving, {record['time_s']:.0f} s); last rung: {scores}: "
        + (
            f"{winner} wins over the table's {decision.table_pick}."
            if winner != decision.table_pick
            else f"the table's {winner} holds."
        )
    )


def resolve_auto(
    cfg: DictConfig, datamodule: Any, check: Callable[[DictConfig], None] | None = None
) -> dict[str, Any] | None:
    """With `strategy=auto`, measure, decide and write the choice into `cfg` (in place, so
    the hyperparameters logged later are the ones used); else do nothing.

    Call it after the data module's setup and before the model and callbacks are built.
    A resumed run (`ckpt_path` set) reuses the choice recorded in its run dir's `auto.json`.

    Args:
        cfg: the composed run config.
        datamodule: a set-up `ImageFolderDataModule` (unused on a resume).
        check: the run entry's config validation (`thawkit.config.checks.validate`): what
            auto wrote must pass the same checks as what a user writes, before it is recorded.

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
        # The probe builds a backbone and the race trains: neither may shift the run's own
        # random draws, so `strategy=auto seed=S` trains as its pick would with `seed=S`.
        with kept_random_state():
            signals = measure(
                cfg, datamodule, auto.max_images, seed, baseline=auto.baseline,
                repeats=auto.probe_repeats, inits=auto.baseline_inits,
            )  # fmt: skip
        groups = signals.layer_groups or len(layer_group_names(str(cfg.model.backbone)))
        decision = auto.decide(signals, groups, "model.weights" in explicit)
        if auto.race and decision.chosen != "scratch":
            race(cfg, datamodule, auto, decision, groups, seed)
        auto.weight_space(decision)  # for the final pick: the race may have changed it
    groups = decision.signals.get("layer_groups") or len(layer_group_names(str(cfg.model.backbone)))
    apply(cfg, decision, explicit, groups)
    _log(decision)
    if check is not None:
        check(cfg)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        record.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, decision.to_dict())
    return decision.to_dict()
