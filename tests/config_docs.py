"""The config reference in docs/config/ against the real conf/: find drift, and fix the tables.

Every config group (a folder of conf/, e.g. `src/thawkit/conf/strategy/`) has a page
`docs/config/<top
folder>.md`; the primary configs (`src/thawkit/conf/train.yaml`, `evaluate.yaml`, `predict.yaml`,
`export.yaml`) have one each. A page holds, for each group, one table between the markers

    <!-- options: strategy -->
    | option | feature_extraction | partial | ... | when to change it |
    ...
    <!-- end options -->

with one row per option as the user types it (`strategy.every_n_epochs`, with the group's
`@package` applied, nested keys flattened), one column per choice (the files of the group)
holding the value that choice sets (`-`: it does not set it), and a last column written by
hand. Keys Hydra's instantiate reads itself (`_target_`, `_partial_`) are left out. A group a
file selects in its defaults list (`override /strategy: gradual`) is a row named by the group
(`strategy`).

    python tests/config_docs.py          # rewrite the tables from conf/, keeping the last column
    python tests/config_docs.py --check  # list the differences (what tests/test_docs.py checks)

A rewrite adds missing pages and rows with an empty last column and drops rows of options that
no longer exist; tests/test_docs.py fails until every last cell is written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
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


def _load(path: Path, group: str | None, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A file's options, flattened, with the same-group files of its defaults list merged in
    (Hydra puts `_self_` last unless the list places it)."""
    raw = yaml.safe_load(path.read_text()) or {}
    prefix = _package(path, group)
    own: dict[str, Any] = {}
    _flatten({k: v for k, v in raw.items() if k != "defaults"}, prefix + "." if prefix else "", own)
    merged: dict[str, Any] = {}
    parts: list[dict[str, Any]] = []
    self_placed = False
    for entry in raw.get("defaults") or []:
        if entry == "_self_":
            parts.append(own)
            self_placed = True
        elif isinstance(entry, str) and (path.parent / f"{entry}.yaml").is_file():
            sibling = path.parent / f"{entry}.yaml"
            if sibling not in seen:
                parts.append(_load(sibling, group, (*seen, path)))
        elif isinstance(entry, dict):
            for target, choice in entry.items():
                name = str(target).removeprefix("override ").strip().lstrip("/")
                parts.append({name: choice})
    if not self_placed:
        parts.append(own)
    for part in parts:
        merged.update(part)
    return merged


def read_groups() -> dict[str, Group]:
    """Every config group of conf/ and every primary config, with each choice's options."""
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
    for group in groups.values():
        is_primary = group.name in PRIMARY
        for choice, path in group.files.items():
            for key, value in _load(path, None if is_primary else group.name).items():
                group.options.setdefault(key, {})[choice] = value
    return groups


def cell(value: Any) -> str:
    """A value as the table shows it (YAML-like, in backticks)."""
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


def problems() -> list[str]:
    """Every difference between conf/ and docs/config/, each naming what to edit."""
    found: list[str] = []
    groups = read_groups()
    pages: dict[Path, dict[str, Table]] = {}
    for group in groups.values():
        page = group.page
        rel = page.relative_to(REPO)
        tables = pages.setdefault(page, read_tables(page))
        fix = f"run `python tests/config_docs.py`, then write the '{WHEN}' cells in {rel}"
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
                f"option `{key}` (set in {group.source}: {', '.join(choices)}) is not documented "
                f"in {rel}: {fix}"
            )
        for key in sorted(set(table.rows) - set(group.options)):
            found.append(
                f"{rel} documents `{key}`, which {group.source} no longer has: delete its row "
                "(`python tests/config_docs.py` does)"
            )
        when = hand_text(table)
        for row in expected_rows(group, when):
            key = row[0].strip("`")
            have = table.rows.get(key)
            if have is None:
                continue
            if columns_match and have[1:-1] != row[1:-1]:  # else every row is off by a column
                found.append(
                    f"{rel}, `{key}`: the table shows {have[1:-1]}, {group.source} sets "
                    f"{row[1:-1]} (choices {group.choices}): run `python tests/config_docs.py`"
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


def write() -> list[Path]:
    """Rewrite every table from conf/ (keeping the hand-written column); add missing pages."""
    changed = []
    by_page: dict[Path, list[Group]] = {}
    for group in read_groups().values():
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
