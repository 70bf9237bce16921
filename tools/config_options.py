"""What each choice of each config group gives each option: read from the composed configs.

`read_groups` composes the training config once per choice (`python train.py <group>=<choice>`)
and the primary configs as they are, and lists, per group, every option with the value each
choice gives it (see tools/config_docs.py for what the tables make of it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

import thawkit.config.schema  # noqa: F401 - registers the schemas the configs name

PRIMARY = ("train", "evaluate", "predict", "export", "serve", "audit")
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


@dataclass
class Group:
    """A config group (or a primary config) and its options: key -> {choice: value}."""

    name: str  # "strategy", "hydra/launcher", or a primary config's name ("train")
    choices: list[str]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # choice -> why it does not compose
    read: bool = True  # False: options not read (`read_groups(only=...)`)
    docs: Path = Path("docs/config")  # the folder of the reference pages

    @property
    def page(self) -> Path:
        return self.docs / f"{self.name.split('/')[0]}.md"

    @property
    def source(self) -> str:
        if self.name in PRIMARY:
            return f"src/thawkit/conf/{self.name}.yaml"
        return f"src/thawkit/conf/{self.name}/"


def _package(path: Path, group: str | None) -> str:
    """The key prefix a file's content lands under (its `# @package`, else the group path)."""
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*@package\s+(\S+)", line)
        if m:
            pkg = m.group(1)
            if pkg == "_global_":
                return ""
            return group.replace("/", ".") if pkg == "_group_" and group else pkg
        if line.strip() and not line.startswith("#"):
            break
    return "" if group is None else group.replace("/", ".")


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    for key, value in node.items():
        if key in HYDRA_KEYS:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            _flatten(value, path + ".", out)
        else:
            out[path] = value


def _raw_options(
    path: Path, group: str | None, seen: tuple[Path, ...] = ()
) -> tuple[list[str], list[str]]:
    """The keys a file sets itself, flattened, with those of the same-group files of its
    defaults list; and the groups its defaults list selects (`override /da: dann` -> `da`)."""
    raw = yaml.safe_load(path.read_text()) or {}
    prefix = _package(path, group)
    out: dict[str, Any] = {}
    _flatten({k: v for k, v in raw.items() if k != "defaults"}, prefix + "." if prefix else "", out)
    keys, groups = list(out), []
    for entry in raw.get("defaults") or []:
        if isinstance(entry, str) and (path.parent / f"{entry}.yaml").is_file():
            sibling = path.parent / f"{entry}.yaml"
            if sibling not in seen:
                more, more_groups = _raw_options(sibling, group, (*seen, path))
                keys += more
                groups += more_groups
        elif isinstance(entry, dict):
            for target in entry:
                groups.append(str(target).removeprefix("override ").strip().lstrip("/"))
    return keys, groups


class ComposeError(Exception):
    """A choice's config does not compose."""


# (digest of conf/, config, overrides) -> composed config: the tests read the same conf/ often.
_COMPOSED: dict[tuple[str, str, tuple[str, ...]], DictConfig | ComposeError] = {}


def _stored(repo: dict[str, Any], prefix: str = "") -> list[str]:
    """Every node of Hydra's ConfigStore (the schemas among them), as text."""
    out = []
    for name in sorted(repo):
        item = repo[name]
        if isinstance(item, dict):
            out += _stored(item, f"{prefix}{name}/")
        else:
            out.append(f"{prefix}{name}:{item.package}:{OmegaConf.to_yaml(item.node)}")
    return out


def _digest(conf: Path) -> str:
    """What the composed configs depend on: the YAML files and the schemas."""
    h = hashlib.sha256()
    for path in sorted(conf.rglob("*.yaml")):
        h.update(path.relative_to(conf).as_posix().encode() + b"\0" + path.read_bytes())
    repo = ConfigStore.instance().repo
    for text in _stored({k: v for k, v in repo.items() if k != "hydra"}):  # Hydra's: lazily
        h.update(text.encode())
    return h.hexdigest()


def _compose(config: str, overrides: list[str], digest: str) -> DictConfig:
    key = (digest, config, tuple(overrides))
    if key not in _COMPOSED:
        try:
            _COMPOSED[key] = compose(config, overrides=overrides, return_hydra_config=True)
        except Exception as first:  # noqa: BLE001 - a group not in the defaults list takes +
            try:
                plus = [f"+{o}" for o in overrides]
                if not plus:
                    raise
                _COMPOSED[key] = compose(config, overrides=plus, return_hydra_config=True)
            except Exception:  # noqa: BLE001
                _COMPOSED[key] = ComposeError(str(first).splitlines()[0])
    found = _COMPOSED[key]
    if isinstance(found, ComposeError):
        raise found
    return found


def _value(cfg: DictConfig, key: str) -> Any:
    """The value at `key` as the config states it (interpolations unresolved). A key may hold
    dots itself (`hydra.sweeper.params` has `model.lr`): the longest key that exists wins."""
    node: Any = cfg
    parts = key.split(".")
    i = 0
    while i < len(parts):
        if not isinstance(node, DictConfig) or node._is_none():
            return ABSENT_KEY
        names = {str(k) for k in node.keys()}
        j = next((j for j in range(len(parts), i, -1) if ".".join(parts[i:j]) in names), None)
        if j is None:
            return ABSENT_KEY
        node = node._get_node(".".join(parts[i:j]))
        i = j
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return None if node._is_none() else OmegaConf.to_container(node, resolve=False)
    return node._value()


ABSENT_KEY = object()


def _home(group: str, files: dict[str, Path], cfg: DictConfig) -> str | None:
    """The node a group is named for, when it has a schema: `data.augment` for `augment`."""
    for path in files.values():
        package = _package(path, group) or group
        if package.split(".")[-1] != group.split("/")[-1]:
            continue
        node = OmegaConf.select(cfg, package, default=None)
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if schema not in (None, dict) and not schema.__module__.startswith("hydra"):  # Hydra's own
            return package
    return None


def _choice_options(group: Group, choice: str, owned: set[str], digest: str) -> dict[str, Any]:
    """What the composed config has, with this choice, at the options of the group."""
    path = group.files[choice]
    primary = group.name in PRIMARY
    cfg = (
        _compose(group.name, [], digest)
        if primary
        else _compose("train", [f"{group.name}={choice}"], digest)
    )
    raw_keys, group_rows = _raw_options(path, None if primary else group.name)
    keys = dict.fromkeys(raw_keys)
    if primary:  # the top-level keys of its schema (not the nodes its groups fill)
        for key in cfg:
            node = cfg._get_node(key)
            if key != "hydra" and key not in group_rows and not isinstance(node, DictConfig):
                keys[str(key)] = None
            elif key not in group_rows and key != "hydra":
                flat: dict[str, Any] = {}
                _flatten({key: _value(cfg, str(key))}, "", flat)
                keys.update(dict.fromkeys(flat))
    home = None if primary else _home(group.name, {choice: path}, cfg)
    if home is not None:
        flat = {}
        _flatten({home: _value(cfg, home)}, "", flat)
        below = [o for o in owned if o.startswith(home + ".")]
        for key in flat:
            if not any(key == o or key.startswith(o + ".") for o in below):
                keys[key] = None
    options: dict[str, Any] = {g: cfg.hydra.runtime.choices.get(g) for g in group_rows}
    for key in keys:
        value = _value(cfg, key)
        if value is not ABSENT_KEY:
            options[key] = value
    return options


def read_groups(conf: Path, docs: Path, only: set[str] | None = None) -> dict[str, Group]:
    """Every config group of conf/ and every primary config, with each choice's options (of
    the groups in `only`, when given: the others keep `read = False`)."""
    groups: dict[str, Group] = {}
    for name in PRIMARY:
        path = conf / f"{name}.yaml"
        if path.is_file():
            groups[name] = Group(name, ["default"], files={"default": path}, docs=docs)
    folders = sorted({p.parent for p in conf.rglob("*.yaml") if p.parent != conf})
    for folder in folders:
        name = folder.relative_to(conf).as_posix()
        # `default` first, then by name.
        files = sorted(folder.glob("*.yaml"), key=lambda f: (f.stem != "default", f.stem))
        groups[name] = Group(
            name, [f.stem for f in files], files={f.stem: f for f in files}, docs=docs
        )
    # Nodes a group is named for: not listed again on the page of the node above them.
    owned = {
        _package(p, g.name) or g.name
        for g in groups.values()
        if g.name not in PRIMARY
        for p in g.files.values()
        if (_package(p, g.name) or g.name).split(".")[-1] == g.name.split("/")[-1]
    }
    digest = _digest(conf)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
            for group in groups.values():
                if only is not None and group.name not in only:
                    group.read = False
                    continue
                for choice in group.files:
                    try:
                        options = _choice_options(group, choice, owned, digest)
                    except ComposeError as error:
                        group.errors[choice] = str(error)
                        continue
                    for key, value in options.items():
                        group.options.setdefault(key, {})[choice] = value
    finally:
        GlobalHydra.instance().clear()
    return groups
