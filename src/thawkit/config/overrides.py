"""Command-line keys that do not exist get "did you mean", before Hydra composes the run.

The schema (thawkit.config.schema) puts every config in struct mode, so Hydra rejects
`model.lrr=1` itself, but its message ("Could not override 'model.lrr'. To append to your
config use +model.lrr=1") advises adding the typo. `check_command_line` composes the config
once with the command line's overrides and, when a key is not in it, exits with a message that
names the closest keys instead. Anything else (a valid command line, another error, a sweep)
is left to Hydra, which reports it as before.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ConfigTypeError

from thawkit import CONF_DIR
from thawkit.config import schema  # registers the schemas composed here

# The schema of each primary config: keys that are fields of it need no composition to check.
PRIMARY_SCHEMAS: dict[str, type] = {
    "train": schema.TrainSchema,
    "predict": schema.PredictSchema,
    "evaluate": schema.EvaluateSchema,
    "export": schema.ExportSchema,
    "serve": schema.ServeSchema,
    "audit": schema.AuditSchema,
}

# Top-level flags of version 0.1 that are config groups or nodes now.
RENAMED = {
    "ema": "ema=on (ema=none: off) turns on the weight average; its decay is callbacks.ema.decay",
    "ema_decay": "callbacks.ema.decay (with ema=on)",
}


def unknown_key_message(cfg: DictConfig, key: str) -> str | None:
    """Why `key` is not a key of `cfg`, naming the closest keys; None when it is one."""
    node: object = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig) or node._is_none():
            return None  # below a null or a leaf: not a question of spelling
        if part not in node:
            where = ".".join(parts[:i])
            keys = sorted(str(k) for k in node.keys() if not str(k).startswith("_"))
            close = difflib.get_close_matches(part, keys, n=3, cutoff=0.6)
            prefix = f"{where}." if where else ""
            if close:
                return f"{key}: no such key; did you mean {' or '.join(prefix + c for c in close)}?"
            return (
                f"{key}: no such key; the keys of {where or 'the config'} are: {', '.join(keys)}. "
                f"(An argument thawkit's configs do not list, such as a Lightning Trainer "
                f"keyword, takes Hydra's +: +{key}=...)"
            )
        node = node._get_node(part)
    return None


def _renamed(parsed: Sequence[Override]) -> list[str]:
    """Messages for the flags of version 0.1 (`ema=true`, `ema_decay=0.99`)."""
    return [
        f"{o.input_line}: no such key any more; use {RENAMED[o.key_or_group]}."
        for o in parsed
        if o.key_or_group in RENAMED and (o.key_or_group != "ema" or not isinstance(o.value(), str))
    ]


def _parse(args: Sequence[str]) -> list[Override] | None:
    """The overrides of a command line; None when it is not for us to check."""
    if any(a.startswith("-") for a in args):
        return None  # --multirun, --cfg, --config-path ...: Hydra's own handling
    try:
        parsed = OverridesParser.create().parse_overrides(list(args))
    except Exception:  # noqa: BLE001 - a malformed override is Hydra's to report
        return None
    return None if any(o.is_sweep_override() for o in parsed) else parsed


def _plain_keys(parsed: Sequence[Override], conf_dir: Path) -> list[Override]:
    """The overrides of config keys (not groups, not Hydra's own, not a package)."""
    return [
        o
        for o in parsed
        if o.package is None
        and "/" not in o.key_or_group
        and not o.key_or_group.startswith("hydra")
        and not (conf_dir / o.key_or_group).is_dir()
    ]


def _key_overrides(parsed: Sequence[Override], conf_dir: Path) -> list[str]:
    """The keys that plain `key=value` overrides set (not groups, not Hydra's own, not +/~)."""
    return [
        o.key_or_group
        for o in _plain_keys(parsed, conf_dir)
        if not (o.is_add() or o.is_force_add() or o.is_delete())
    ]


def _deletions(parsed: Sequence[Override], conf_dir: Path) -> list[str]:
    """`~callbacks.views`: a key of a schema cannot be removed, only set to null (off)."""
    return [
        f"{o.input_line}: the keys of thawkit's configs cannot be removed; "
        f"turn it off with {o.key_or_group}=null"
        for o in _plain_keys(parsed, conf_dir)
        if o.is_delete()
    ]


def check_command_line(
    config_name: str, args: Sequence[str] | None = None, conf_dir: Path = CONF_DIR
) -> None:
    """Exit with "did you mean" when an override of `args` (default: sys.argv) sets a key that
    the composed `config_name` does not have. Call it before the Hydra entry point."""
    args = list(sys.argv[1:] if args is None else args)
    parsed = _parse(args)
    if not parsed:
        return
    renamed = _renamed(parsed)
    if renamed:
        _exit(renamed)
    keys = _key_overrides(parsed, conf_dir)
    if not _deletions(parsed, conf_dir) and all(_in_schema(config_name, k) for k in keys):
        # Every key is a field of the config's schema, which the composed config has in struct
        # mode: composing it here (~0.2 s of every start, docs/architecture.md, "Process
        # start") could only confirm that.
        return
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
            try:
                compose(config_name, overrides=args)
                return
            except ConfigCompositionException as error:
                if isinstance(error.__cause__, ConfigTypeError) and _deletions(parsed, conf_dir):
                    _exit(_deletions(parsed, conf_dir))
                if not isinstance(error.__cause__, (ConfigKeyError, ConfigAttributeError)):
                    return
            except Exception:  # noqa: BLE001 - not a missing key: Hydra reports it
                return
            # Compose without the key overrides, then find which key is missing.
            others = [
                str(a) for a, o in zip(args, parsed, strict=True) if o.key_or_group not in keys
            ]
            try:
                cfg = compose(config_name, overrides=others)
            except Exception:  # noqa: BLE001 - let Hydra report the original error
                return
    finally:
        GlobalHydra.instance().clear()
    messages = [m for k in keys if (m := unknown_key_message(cfg, k))]
    if messages:
        _exit(messages)


def _in_schema(config_name: str, key: str) -> bool:
    """Whether `key` (`a.b.c`) is a field of `config_name`'s schema, through its dataclasses.

    False where the schema cannot tell: a key below a node typed `Any` (the strategy, the
    optimizer, Lightning's callbacks), whose keys only the composed config knows.
    """
    node: Any = PRIMARY_SCHEMAS.get(config_name)
    for part in key.split("."):
        if node is None or part not in _field_types(node):
            return False
        node = _field_types(node)[part]
    return True


@functools.cache
def _field_types(cls: type) -> dict[str, type | None]:
    """A schema dataclass's fields and, for each, the dataclass it holds (None: not one)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, type | None] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        options = typing.get_args(hint) if union else (hint,)
        out[f.name] = next((o for o in options if dataclasses.is_dataclass(o)), None)
    return out


def _exit(messages: list[str]) -> None:
    sys.stderr.write("\n".join(f"Error: {m}" for m in messages) + "\n")
    sys.exit(1)
