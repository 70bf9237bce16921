"""Config validation before any data is read: names, ranges and unknown keys, all at once.

`validate(cfg)` raises one `ConfigError` that lists every problem, each naming its key, the
value given and what is allowed. The ranges and choices are the rules declared beside each
field of thawkit.config.schema; here they are applied, with what spans several fields or
needs the backbone (the split fractions, da's target folder, a backbone's name and its number
of layer groups). Hydra itself rejects an unknown config group option (`strategy=gradul`, with
the list of options) and, the schema being in struct mode, an unknown key on the command line
(`model.lrr=1`; thawkit.config.overrides turns that into "did you mean"); this also catches
keys added with `+` or by an experiment file."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from thawkit.config.schema import (
    BY_TARGET,
    CALLBACK_RULES,
    AugmentSchema,
    HeadSchema,
    ImbalanceSchema,
    MixSchema,
    TrainSchema,
    problems,
)
from thawkit.config.schema.weight_space import alphas_problem
from thawkit.models.backbone import TORCHVISION_BACKBONES, layer_group_names
from thawkit.models.timm_import import timm

# Top-level keys of a training config: the fields of its schema, and Hydra's own node.
TOP_LEVEL = {f.name for f in dataclasses.fields(TrainSchema)} | {"hydra"}
# Keys Hydra's instantiate reads itself.
_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# Keys `thawkit.run.train.build` takes out of a node before instantiating it.
_EXTRA_KEYS = {"model": {"reset_head"}}
# Arguments `thawkit.run.train.build` passes itself: allowed, but not offered as config keys.
_INJECTED = {
    "model": {"num_classes", "class_names", "class_weights", "optimizer", "scheduler"},
    "data": {"preprocessing", "target_root", "target_val_root"},  # the last two from `da`
    "trainer": {"callbacks", "logger", "plugins"},
    "distill": {"class_names"},
}
# Sub-dicts passed on as keyword arguments (no `_target_`): their keys are their schema's fields
# (tests/config/test_schema.py holds those to the callables' parameters).
_KWARG_NODES: dict[str, set[str]] = {
    path: {f.name for f in dataclasses.fields(schema)}
    for path, schema in (
        ("data.augment", AugmentSchema),
        ("data.mix", MixSchema),
        ("model.head", HeadSchema),
        ("data.imbalance", ImbalanceSchema),
    )
}


class ConfigError(ValueError):
    """One or more config values are invalid; the message lists each with its key."""


def _params(target: Callable[..., Any]) -> set[str] | None:
    """Keyword parameters of `target` (a class: of its __init__); None if it takes **kwargs."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return set(sig.parameters)


def _unknown(path: str, keys: list[str], allowed: set[str]) -> list[str]:
    errors = []
    offered = allowed - _INJECTED.get(path.rstrip("."), set())
    for key in keys:
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, sorted(offered), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        shown = ", ".join(sorted(k for k in offered if not k.startswith("_")))
        errors.append(f"{path}{key}: unknown key{hint} Valid keys: {shown}")
    return errors


def _check_keys(node: Any, path: str, errors: list[str]) -> None:
    """Every `_target_` node's keys must be parameters of its target (walks the whole tree)."""
    if isinstance(node, (DictConfig, ListConfig)) and (
        node._is_none() or node._is_missing() or node._is_interpolation()
    ):
        return
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        name = path.rstrip(".")
        if isinstance(target, str):
            try:
                params = _params(get_object(target))
            except Exception as e:  # noqa: BLE001 - any import failure is a config error here
                errors.append(f"{name}._target_={target!r} cannot be imported: {e}")
                params = None
            if params is not None:
                allowed = params | _HYDRA_KEYS | _EXTRA_KEYS.get(name, set())
                errors += _unknown(path, [str(k) for k in node], allowed)
        if name in _KWARG_NODES:
            errors += _unknown(path, [str(k) for k in node], _KWARG_NODES[name])
        for key in node:
            if not path and key == "hydra":
                continue  # Hydra's own config (launchers, sweepers) is Hydra's to check
            value = node._get_node(key)
            if isinstance(value, (DictConfig, ListConfig)):
                _check_keys(value, f"{path}{key}.", errors)
    elif isinstance(node, ListConfig):
        for i, value in enumerate(node._iter_ex(resolve=False)):
            _check_keys(value, f"{path}{i}.", errors)


def _check_ranges(cfg: DictConfig, errors: list[str]) -> None:
    """The rules the schema declares beside each field, then what spans several fields."""
    errors += problems(cfg, TrainSchema, BY_TARGET)
    for key, rule in CALLBACK_RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        message = rule.problem(key, value) if value is not None else None
        if message:
            errors.append(message)
    fractions = [
        OmegaConf.select(cfg, f"data.{k}_fraction", default=0) or 0 for k in ("val", "test")
    ]
    if all(isinstance(f, (int, float)) for f in fractions) and sum(fractions) >= 1:
        errors.append(
            f"data.val_fraction + data.test_fraction = {sum(fractions)} leaves no training "
            "images: allowed sum < 1"
        )


def _check_backbone(name: str, errors: list[str]) -> bool:
    if name in TORCHVISION_BACKBONES or timm.is_model(name):
        return True
    # timm and torchvision share names (resnet50): each name once.
    known = sorted(set(timm.list_models()) | set(TORCHVISION_BACKBONES))
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Closest names: {close}." if close else ""
    errors.append(
        f"model.backbone={name!r} is not a known backbone. Use a timm model name "
        f"(timm.list_models()) or one of the torchvision backbones "
        f"{sorted(TORCHVISION_BACKBONES)}.{hint}"
    )
    return False


def _check_group_counts(cfg: DictConfig, errors: list[str]) -> None:
    keys = {
        k: OmegaConf.select(cfg, f"strategy.{k}", default=None)
        for k in ("initial_groups", "max_groups")
    }
    ints = {k: v for k, v in keys.items() if v is not None}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= -1 for v in ints.values()):
        return  # out of range: the schema's rule names it
    if not any(v > 0 for v in ints.values()):
        return
    groups = layer_group_names(cfg.model.backbone)
    for key, value in ints.items():
        if value > len(groups):
            errors.append(
                f"strategy.{key}={value} is larger than the number of layer groups of "
                f"{cfg.model.backbone}: allowed 0..{len(groups)} (or -1 for all); its groups "
                f"are {groups}"
            )


def validate(cfg: DictConfig) -> None:
    """Check a composed training config; raise `ConfigError` listing every problem found."""
    errors: list[str] = []
    errors += _unknown("", [str(k) for k in cfg], TOP_LEVEL)
    _check_keys(cfg, "", errors)
    method = OmegaConf.select(cfg, "da.method", default=None)
    if method not in (None, "none") and not OmegaConf.select(cfg, "da.target_root", default=None):
        errors.append(
            f"da={method} needs unlabelled target images: set da.target_root=<folder of "
            "target-domain images> (or da=none)"
        )
    if cfg.get("swa") and OmegaConf.select(cfg, "callbacks.ema", default=None) is not None:
        errors.append(
            "swa=true and ema=on both average the weights (and both would swap them in for "
            "validation): choose one (ema=none, or swa=false)"
        )
    alphas = OmegaConf.select(cfg, "weight_space.alphas", default=None)
    if alphas is not None:
        problem = alphas_problem(
            OmegaConf.to_object(alphas) if OmegaConf.is_config(alphas) else alphas
        )
        errors += [problem] if problem else []
    _check_ranges(cfg, errors)
    backbone = OmegaConf.select(cfg, "model.backbone", default=None)
    if backbone is not None and _check_backbone(str(backbone), errors):
        _check_group_counts(cfg, errors)
    if errors:
        listing = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"Invalid config ({len(errors)} problem(s)):\n{listing}")
