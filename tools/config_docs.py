"""The config reference in docs/config/ against the composed configs: find drift, fix tables.

Every config group (a folder of conf/, e.g. `src/thawkit/conf/strategy/`) has a page
`docs/config/<top folder>.md`; the primary configs (`src/thawkit/conf/train.yaml`,
`evaluate.yaml`, `predict.yaml`, `export.yaml`, `serve.yaml`) have one each. A page holds, for
each group, one table between the markers

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
import json
import re
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Run from a checkout without installing; config_options sits beside this file.
sys.path[:0] = [str(REPO / "src"), str(REPO / "tools")]

import config_options  # noqa: E402
from config_options import PRIMARY, Group  # noqa: E402

CONF = REPO / "src" / "thawkit" / "conf"
DOCS = REPO / "docs" / "config"
WHEN = "when to change it"
BEGIN = re.compile(r"^<!-- options: (?P<group>[\w/]+) -->\s*$")
END = "<!-- end options -->"
ABSENT = "-"


def read_groups(only: set[str] | None = None) -> dict[str, Group]:
    """Every config group of conf/ and every primary config, with each choice's options."""
    return config_options.read_groups(CONF, DOCS, only)


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
