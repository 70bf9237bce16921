"""One schema per config target: every key of every config group, its default and its rule.

Each config group of src/thawkit/conf/ maps to one dataclass here (docs/config/README.md lists
them); the YAML files state only what differs from it. The schemas are registered in Hydra's
ConfigStore when this package is imported (thawkit.config.checks imports it, so does every
entry point):

- `train_schema`, `predict_schema`, `evaluate_schema`, `export_schema`, `serve_schema`,
  `audit_schema`: the primary configs' first defaults-list entry. `train_schema` types the
  groups with one object each (data, model, scheduler, da, callbacks, trainer), so a group file
  merges onto its schema.
- `strategy/base_unfreeze`, `strategy/base_auto`, `regularizer/base_l2sp`,
  `regularizer/base_ewc`: groups whose choices build different classes name their schema in
  their own defaults list.

So every key exists without Hydra's `+`, a typo fails at composition, and a constructor's
defaults can be the schema's (`lr: float = ModelSchema.lr`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from thawkit.config.schema.data import AugmentSchema, DataSchema, ImbalanceSchema, MixSchema
from thawkit.config.schema.model import HeadSchema, ModelSchema
from thawkit.config.schema.primary import (
    AuditSchema,
    EvaluateSchema,
    ExportSchema,
    PredictSchema,
    ServeSchema,
    TrainSchema,
)
from thawkit.config.schema.rules import check_args, problems
from thawkit.config.schema.strategy import AutoSchema, UnfreezeSchema
from thawkit.config.schema.training import (
    CALLBACK_RULES,
    CallbacksSchema,
    DASchema,
    DistillSchema,
    EMASchema,
    EWCSchema,
    L2SPSchema,
    SchedulerSchema,
    SpeedSchema,
    TrainerSchema,
    ValReportSchema,
    ViewsSchema,
)
from thawkit.config.schema.weight_space import TuneSchema, WeightSpaceSchema

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "AuditSchema", "AugmentSchema", "AutoSchema", "CALLBACK_RULES", "CallbacksSchema", "DASchema",
    "DataSchema", "DistillSchema", "EMASchema", "EWCSchema", "EvaluateSchema", "ExportSchema",
    "HeadSchema",
    "ImbalanceSchema", "L2SPSchema", "MixSchema", "ModelSchema", "PredictSchema",
    "SchedulerSchema", "ServeSchema", "SpeedSchema", "TrainSchema", "TrainerSchema", "TuneSchema",
    "UnfreezeSchema", "ValReportSchema", "ViewsSchema", "WeightSpaceSchema", "BY_TARGET",
    "load_option", "problems",
    "check_args",
]  # fmt: skip

# A node whose `_target_` is one of these follows that schema wherever it sits (a group typed
# `Any` in TrainSchema, a resumed run's plain config).
BY_TARGET: dict[str, type] = {
    s._target_: s  # type: ignore[attr-defined]
    for s in (
        DataSchema, ModelSchema, UnfreezeSchema, AutoSchema, SchedulerSchema, L2SPSchema,
        EWCSchema, DASchema, DistillSchema, SpeedSchema, EMASchema, ViewsSchema, TrainerSchema,
        ValReportSchema,
    )
}  # fmt: skip

# Group files that name a schema in their defaults list: (group, name, node, package).
_GROUP_SCHEMAS = (
    ("strategy", "base_unfreeze", {"strategy": UnfreezeSchema}, "_global_"),
    ("strategy", "base_auto", {"strategy": AutoSchema}, "_global_"),
    ("regularizer", "base_l2sp", L2SPSchema, None),
    ("regularizer", "base_ewc", EWCSchema, None),
    ("ema", "base_ema", EMASchema, None),
)


def register() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    for name, node in (
        ("train_schema", TrainSchema),
        ("predict_schema", PredictSchema),
        ("evaluate_schema", EvaluateSchema),
        ("export_schema", ExportSchema),
        ("serve_schema", ServeSchema),
        ("audit_schema", AuditSchema),
    ):
        cs.store(name=name, node=node)
    for group, name, node, package in _GROUP_SCHEMAS:
        cs.store(group=group, name=name, node=node, package=package)


def load_option(path: Traversable, group: str) -> DictConfig:
    """A group file as Hydra merges it: its defaults list (schemas and sibling files of the
    same group) first, unless `_self_` is placed, then its own keys.

    For readers of one option file outside a composition (strategy=auto reads the strategy it
    picked); the keys land where the file's package puts them (a `_global_` file: top level).
    `path` may be a file inside an installed package (importlib.resources).
    """
    with path.open("r", encoding="utf-8") as f:
        raw = OmegaConf.load(f)
    defaults = list(raw.pop("defaults", None) or [])
    if "_self_" not in defaults:
        defaults.append("_self_")
    folder = getattr(path, "parent", None)
    parts = []
    for entry in defaults:
        sibling = folder.joinpath(f"{entry}.yaml") if folder is not None else None
        if entry == "_self_":
            parts.append(raw)
        elif sibling is not None and sibling.is_file():
            parts.append(load_option(sibling, group))
        else:
            parts.append(ConfigStore.instance().load(f"{group}/{entry}.yaml").node)
    return OmegaConf.merge(*parts)


register()
