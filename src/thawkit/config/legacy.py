"""Configs written before the package layout of docs/architecture.md still resume.

A run dir keeps the config it was started with (`.hydra/config.yaml`); `resume=DIR` builds the
run from it again, so every `_target_` in it must still import. Version 0.1 kept all modules
side by side in `thawkit/`; `upgrade` rewrites those paths to their homes today, and moves
the keys whose place changed (the top-level `ema` / `ema_decay` flags -> `callbacks.ema`).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, open_dict

# Module paths of version 0.1 -> where the module lives now.
MOVED_MODULES = {
    "thawkit.backbone": "thawkit.models.backbone",
    "thawkit.weights": "thawkit.models.weights",
    "thawkit.head": "thawkit.models.head",
    "thawkit.batchnorm": "thawkit.models.batchnorm",
    "thawkit.loss": "thawkit.models.loss",
    "thawkit.module": "thawkit.finetune.module",
    "thawkit.unfreeze": "thawkit.finetune.unfreeze",
    "thawkit.schedule": "thawkit.finetune.lr_schedule",
    "thawkit.auto": "thawkit.finetune.auto",
    "thawkit.ddp": "thawkit.finetune.ddp",
    "thawkit.train": "thawkit.run.train",
    "thawkit.job": "thawkit.run.job",
    "thawkit.rundir": "thawkit.run.rundir",
    "thawkit.lifecycle": "thawkit.run.lifecycle",
    "thawkit.speed": "thawkit.run.speed",
    "thawkit.summary": "thawkit.reporting.summary",
    "thawkit.views": "thawkit.reporting.tensorboard",
    "thawkit.plots": "thawkit.reporting.plots",
    "thawkit.diagnosis": "thawkit.reporting.diagnosis",
    "thawkit.report": "thawkit.reporting.sweep_report",
    "thawkit.sweep_callback": "thawkit.reporting.sweep_callback",
    "thawkit.predict": "thawkit.inference.predict",
    "thawkit.evaluate": "thawkit.inference.evaluate",
    "thawkit.export": "thawkit.inference.export",
    "thawkit.regularize": "thawkit.transfer.regularize",
    "thawkit.ema": "thawkit.transfer.ema",
    "thawkit.domain": "thawkit.transfer.domain",
    "thawkit.validate": "thawkit.config.checks",
    "thawkit.feature_cache": "thawkit.data.feature_cache",
}


def upgrade_target(target: str) -> str:
    """`thawkit.module.FineTuneModule` -> `thawkit.finetune.module.FineTuneModule`."""
    module, _, name = target.rpartition(".")
    return f"{MOVED_MODULES[module]}.{name}" if module in MOVED_MODULES else target


# The top-level flags of version 0.1 that became the `callbacks.ema` node (the `ema` group).
EMA_TARGET = "thawkit.transfer.ema.EMA"


def _move_ema(cfg: DictConfig) -> None:
    """`ema: true, ema_decay: d` -> `callbacks.ema: {_target_: ..EMA, decay: d}` (false: null)."""
    if "ema" not in cfg and "ema_decay" not in cfg:
        return
    with open_dict(cfg):
        enabled = bool(cfg.pop("ema", False))
        decay = cfg.pop("ema_decay", 0.999)
        if "callbacks" not in cfg or cfg.callbacks is None:
            cfg.callbacks = {}
    with open_dict(cfg.callbacks):
        if "ema" not in cfg.callbacks:
            cfg.callbacks.ema = {"_target_": EMA_TARGET, "decay": decay} if enabled else None


def upgrade(cfg: Any) -> Any:
    """Rewrite, in place, every `_target_` of `cfg` that names a module of the old layout, and
    move the keys of the old layout to their places today (at the top of a run's config)."""
    if isinstance(cfg, DictConfig) and isinstance(cfg.get("ema", None), bool):
        _move_ema(cfg)
    if isinstance(cfg, DictConfig):
        with open_dict(cfg):
            for key in list(cfg.keys()):
                node = cfg._get_node(key)
                if key == "_target_" and isinstance(cfg[key], str):
                    cfg[key] = upgrade_target(cfg[key])
                elif isinstance(node, (DictConfig, ListConfig)):
                    upgrade(node)
    elif isinstance(cfg, ListConfig):
        for item in cfg._iter_ex(resolve=False):
            upgrade(item)
    return cfg
