"""One schema per config target: the constructors' defaults are the composed config's, every key
exists without +, and a rule gives the same message to a config and to Python."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from conftest import CONF_DIR, tiny_cfg
from thawkit.config.checks import ConfigError, validate
from thawkit.config.schema import (
    BY_TARGET,
    AugmentSchema,
    HeadSchema,
    MixSchema,
    ModelSchema,
    TrainerSchema,
    TrainSchema,
    check_args,
)
from thawkit.data.mixing import BatchMixer
from thawkit.data.transforms import train_transform
from thawkit.finetune.module import FineTuneModule
from thawkit.models.head import Head

# Schemas of nodes whose keys are keyword arguments of a callable (no `_target_` of their own).
KWARG_SCHEMAS: dict[type, Callable[..., Any]] = {
    AugmentSchema: train_transform,
    MixSchema: BatchMixer,
    HeadSchema: Head,
}
# Defaults that cannot be the schema's: the run's seed (an interpolation), a folder resolved
# in the constructor (None -> thawkit.data.digits), Lightning's own Trainer.
RESOLVED = {"seed", "digits_root", "default_root_dir"}
# Keys that thawkit.run.train.build reads itself (not constructor arguments).
BUILD_KEYS = {"reset_head"}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _drift(schema: type, target: Callable[..., Any]) -> list[str]:
    params = inspect.signature(target).parameters
    node = OmegaConf.to_container(OmegaConf.structured(schema), resolve=False)
    found = []
    for key, value in node.items():
        if key.startswith("_") or key in RESOLVED | BUILD_KEYS or isinstance(value, dict):
            continue
        assert key in params, f"{schema.__name__}.{key} is no parameter of {target}"
        default = params[key].default
        if _plain(default) != value:
            found.append(
                f"{schema.__name__}.{key}: the schema says {value!r}, {target} {default!r}"
            )
    return found


@pytest.mark.parametrize(
    "schema",
    [s for s in {*BY_TARGET.values(), *KWARG_SCHEMAS} if s is not TrainerSchema],
    ids=lambda s: s.__name__,
)
def test_constructor_defaults_are_the_schema_defaults(schema: type) -> None:
    """What a config file leaves out is the schema's default; an object built from Python
    without it uses the same value (most constructors take their defaults from the schema)."""
    target = KWARG_SCHEMAS.get(schema) or get_object(schema._target_)  # type: ignore[attr-defined]
    assert not _drift(schema, target)


def composed(overrides: list[str]) -> DictConfig:
    """The composed config as a user gets it (not shrunk for tests)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("train", overrides)


def test_every_thawkit_target_has_a_schema() -> None:
    targets = {s._target_ for s in BY_TARGET.values()}  # type: ignore[attr-defined]
    assert {
        "thawkit.finetune.module.FineTuneModule",
        "thawkit.finetune.unfreeze.UnfreezeSchedule",
        "thawkit.finetune.auto.AutoStrategy",
        "thawkit.transfer.ema.EMA",
        "thawkit.run.speed.SpeedOptions",
    } <= targets
    for target in targets:
        assert get_object(target), target  # every schema names a class that imports


def test_every_key_exists_without_plus(tmp_path: Path) -> None:
    cfg = tiny_cfg(
        tmp_path,
        [
            "strategy=gradual",
            "strategy.max_groups=4",
            "trainer.enable_progress_bar=false",
            "trainer.limit_train_batches=2",
            "callbacks.views.per_class_recall=false",
            "data.mix.cutmix_alpha=0.5",
            "scheduler.warmup_steps=3",
        ],
    )
    assert cfg.strategy.max_groups == 4 and cfg.trainer.limit_train_batches == 2
    assert set(cfg) - {"hydra"} == {f.name for f in dataclasses.fields(TrainSchema)}


def test_the_yaml_states_only_what_differs() -> None:
    """model/default.yaml is the schema: it sets no key (the issue's 1e-3 / 0.5 drift)."""
    from thawkit import CONF_DIR

    assert not OmegaConf.load(CONF_DIR / "model" / "default.yaml")
    cfg = composed([])
    assert (cfg.model.lr, cfg.model.lr_decay) == (ModelSchema.lr, ModelSchema.lr_decay)
    params = inspect.signature(FineTuneModule).parameters
    assert (params["lr"].default, params["lr_decay"].default) == (2e-3, 0.8)


def test_a_rule_gives_one_message_to_a_config_and_to_python(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as from_config:
        validate(tiny_cfg(tmp_path, ["mix=mixup", "data.mix.prob=1.5"]))
    with pytest.raises(ValueError) as from_python:
        BatchMixer("mixup", prob=1.5)
    message = "data.mix.prob=1.5 is out of range: allowed [0, 1]"
    assert message in str(from_config.value) and str(from_python.value) == message
    with pytest.raises(ValueError, match="data.mix.mode='mixupp' is not one of .*'mixup'"):
        check_args(MixSchema, "data.mix", mode="mixupp")
    check_args(MixSchema, "data.mix", mode="cutmix", prob=None)  # None: not given
