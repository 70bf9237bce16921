"""The config reference in docs/config/ against the composed configs: find drift, fix tables.

Every config group (a folder of conf/, e.g. `src/thawkit/conf/strategy/`) has a page
`docs/config/<top folder>.md`; the primary configs (`src/thawkit/conf/train.yaml`,
`evaluate.yaml`, `predict.yaml`, `export.yaml`) have one each. A page holds, for each group, one
table between the markers

    <!-- options: strategy -->
    | option | feature_extraction | partial | ... | when to change it |
    ...
    <!-- end options -->

with one row per option as the user types it (`strategy.every_n_epochs`, nested keys
flattened), one column per choice (the files of the group) holding the value the composed
config has with that choice (`python train.py <group>=<choice>`: the schema's default,
thawkit.config.schema, or what the choice's file states; `-`: the option does not exist with
that choice), and a last column written by hand. Which options a group has: every key of the
node the group is named for when that node has a schema (`data.augment` for `augment`, `strategy`
for `strategy`), less the nodes other groups own (`data.augment` is not on the `data` page),
plus the keys its files set elsewhere (scratch's `model.weights`). Keys Hydra's instantiate
reads itself (`_target_`, `_partial_`) are left out. A group a file selects in its defaults
list (`override /strategy: gradual`) is a row named by the group (`strategy`).

    python tools/config_docs.py          # rewrite the tables, keeping the last column
    python tools/config_docs.py --check  # list the differences (what tests/test_docs.py checks)

A rewrite adds missing pages and rows with an empty last column and drops rows of options that
no longer exist; tests/test_docs.py fails until every last cell is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

import thawkit.config.schema  # noqa: E402,F401 - registers the schemas the configs name

CONF = REPO / "src" / "thawkit" / "conf"
DOCS = REPO / "docs" / "config"
PRIMARY = ("train", "evaluate", "predict", "export")
WHEN = "when to change it"
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
BEGIN = re.compile(r"^<!-- options: (?P<group>[\w/]+) -->\s*$")
END = "<!-- end options -->"
ABSENT = "-"


@dataclass
class Group:
    """A config group (or a primary config) and its options: key -> {choice: value}."""

    name: str  # "strategy", "hydra/launcher", or a primary config's name ("train")
    choices: list[str]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # choice -> why it does not compose
    read: bool = True  # False: options not read (`read_groups(only=...)`)

    @property
    def page(self) -> Path:
        return DOCS / f"{self.name.split('/')[0]}.md"

    @property
    def source(self) -> str:
        if self.name in PRIMARY and (CONF / f"{self.name}.yaml").is_file():
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


def _digest() -> str:
    """What the composed configs depend on: the YAML files and the schemas."""
    h = hashlib.sha256()
    for path in sorted(CONF.rglob("*.yaml")):
        h.update(path.relative_to(CONF).as_posix().encode() + b"\0" + path.read_bytes())
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


def read_groups(only: set[str] | None = None) -> dict[str, Group]:
    """Every config group of conf/ and every primary config, with each choice's options (of
    the groups in `only`, when given: the others keep `read = False`)."""
    groups: dict[str, Group] = {}
    for name in PRIMARY:
        path = CONF / f"{name}.yaml"
        if path.is_file():
            groups[name] = Group(name, ["default"], files={"default": path})
    folders = sorted({p.parent for p in CONF.rglob("*.yaml") if p.parent != CONF})
    for folder in folders:
        name = folder.relative_to(CONF).as_posix()
        # `default` first, then by name.
        files = sorted(folder.glob("*.yaml"), key=lambda f: (f.stem != "default", f.stem))
        groups[name] = Group(name, [f.stem for f in files], files={f.stem: f for f in files})
    # Nodes a group is named for: not listed again on the page of the node above them.
    owned = {
        _package(p, g.name) or g.name
        for g in groups.values()
        if g.name not in PRIMARY
        for p in g.files.values()
        if (_package(p, g.name) or g.name).split(".")[-1] == g.name.split("/")[-1]
    }
    digest = _digest()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
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


def cell(value: Any) -> str:
    """A value as the table shows it (YAML-like, in backticks)."""
    if isinstance(value, Enum):  # hydra.mode: MULTIRUN
        value = value.name
    text = value if isinstance(value, str) else json.dumps(value)
    return "`" + str(text).replace("|", "\\|") + "`"


def expected_rows(group: Group, when: dict[str, str]) -> list[list[str]]:
    rows = []
    for key in sorted(group.options):
        values = group.options[key]
        cells = [cell(values[c]) if c in values else ABSENT for c in group.choices]
        rows.append([f"`{key}`", *cells, when.get(key, "")])
    return rows


def render(group: Group, when: dict[str, str]) -> str:
    header = ["option", *group.choices, WHEN]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in expected_rows(group, when)]
    return "\n".join(lines)


def _split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [c.strip() for c in cells[1:-1]]


@dataclass
class Table:
    header: list[str]
    rows: dict[str, list[str]]  # key -> cells (the key cell included)
    start: int  # line index of the BEGIN marker
    end: int  # line index of the END marker


def read_tables(page: Path) -> dict[str, Table]:
    """The option tables of a page, by group."""
    return parse_tables(page.read_text(), page) if page.is_file() else {}


def parse_tables(text: str, page: Path) -> dict[str, Table]:
    """The option tables in a page's text, by group."""
    lines = text.splitlines()
    tables: dict[str, Table] = {}
    for i, line in enumerate(lines):
        m = BEGIN.match(line)
        if not m:
            continue
        j = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == END), None)
        if j is None:
            raise ValueError(f"{page}: the table of {m['group']} has no `{END}` line")
        body = [ln for ln in lines[i + 1 : j] if ln.strip().startswith("|")]
        header = _split_row(body[0]) if body else []
        rows = {}
        for ln in body[2:]:
            cells = _split_row(ln)
            key = re.match(r"`([^`]+)`", cells[0]) if cells else None
            if key:
                rows[key.group(1)] = cells
        tables[m["group"]] = Table(header, rows, i, j)
    return tables


def hand_text(table: Table | None) -> dict[str, str]:
    if table is None:
        return {}
    return {key: cells[-1] for key, cells in table.rows.items() if len(cells) >= 2}


def problems(only: set[str] | None = None) -> list[str]:
    """Every difference between conf/ and docs/config/, each naming what to edit."""
    found: list[str] = []
    groups = read_groups(only)
    pages: dict[Path, dict[str, Table]] = {}
    for group in groups.values():
        page = group.page
        rel = page.relative_to(REPO)
        tables = pages.setdefault(page, read_tables(page))
        fix = f"run `python tools/config_docs.py`, then write the '{WHEN}' cells in {rel}"
        for choice, error in group.errors.items():
            where = group.source if group.name in PRIMARY else f"{group.source}{choice}.yaml"
            found.append(f"{where} does not compose ({group.name}={choice}): {error}")
        if group.name in tables and not group.read:
            continue
        if group.name not in tables:
            found.append(
                f"{group.source} has no options table in {rel} (<!-- options: {group.name} -->): "
                f"{fix}"
            )
            continue
        table = tables[group.name]
        columns_match = table.header[1:-1] == group.choices
        if not columns_match:
            new = sorted(set(group.choices) - set(table.header[1:-1]))
            gone = sorted(set(table.header[1:-1]) - set(group.choices))
            found.append(
                f"{rel}, table {group.name}: choice columns {table.header[1:-1]} but "
                f"{group.source} has {group.choices} (new: {new}, removed: {gone}): {fix}"
            )
        for key in sorted(set(group.options) - set(table.rows)):
            choices = sorted(group.options[key])
            found.append(
                f"option `{key}` (in {group.source}: {', '.join(choices)}) is not documented "
                f"in {rel}: {fix}"
            )
        for key in sorted(set(table.rows) - set(group.options)):
            found.append(
                f"{rel} documents `{key}`, which {group.source} no longer has: delete its row "
                "(`python tools/config_docs.py` does)"
            )
        when = hand_text(table)
        for row in expected_rows(group, when):
            key = row[0].strip("`")
            have = table.rows.get(key)
            if have is None:
                continue
            if columns_match and have[1:-1] != row[1:-1]:  # else every row is off by a column
                found.append(
                    f"{rel}, `{key}`: the table shows {have[1:-1]}, {group.source} composes to "
                    f"{row[1:-1]} (choices {group.choices}): run `python tools/config_docs.py`"
                )
            if not when.get(key, "").strip():
                found.append(f"{rel}, `{key}`: the '{WHEN}' cell is empty: write it")
    for page, tables in pages.items():
        for name in sorted(set(tables) - set(groups)):
            found.append(
                f"{page.relative_to(REPO)} has a table for `{name}`, which is no config group "
                "any more: delete it"
            )
    known = {g.page for g in groups.values()} | {DOCS / "README.md"}
    for page in sorted(DOCS.glob("*.md")):
        if page not in known:
            found.append(f"{page.relative_to(REPO)} documents no config group of conf/: delete it")
    index = (DOCS / "README.md").read_text() if (DOCS / "README.md").is_file() else ""
    for page in sorted({g.page for g in groups.values()}):
        if f"({page.name})" not in index:
            found.append(f"docs/config/README.md does not link {page.name}: add it to the index")
    return found


def write(only: set[str] | None = None) -> list[Path]:
    """Rewrite every table from conf/ (keeping the hand-written column); add missing pages."""
    changed = []
    by_page: dict[Path, list[Group]] = {}
    for group in read_groups(only).values():
        if group.read:
            by_page.setdefault(group.page, []).append(group)
    for page, groups in by_page.items():
        text = (
            page.read_text()
            if page.is_file()
            else (
                f"# `{groups[0].name.split('/')[0]}`\n\n"
                "(What this group sets, its choices, and which to use when: write it.)\n"
            )
        )
        for group in groups:
            tables = parse_tables(text, page)
            table = tables.get(group.name)
            block = f"<!-- options: {group.name} -->\n{render(group, hand_text(table))}\n{END}"
            lines = text.splitlines()
            if table is None:
                text = text.rstrip("\n") + f"\n\n## Options: `{group.name}`\n\n{block}\n"
            else:
                text = "\n".join([*lines[: table.start], block, *lines[table.end + 1 :]]) + "\n"
        if not page.is_file() or page.read_text() != text:
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(text)
            changed.append(page)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only list the differences")
    args = parser.parse_args(argv)
    if not args.check:
        for page in write():
            print(f"updated {page.relative_to(REPO)}")
    found = problems()
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
