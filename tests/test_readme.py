"""The README stays short and the pages of docs/ stay true to the repository.

Checked for README.md and docs/*.md (and the links of docs/config/, whose tables test_docs.py
checks): every relative link leads to a file (and its #anchor to a heading there), every page
is linked from the README, every file, test, module and `python -m` entry the text names still
exists, the package tree and the config groups table of docs/architecture.md are those of
src/thawkit/, and nothing in the repository points at a design document outside it.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PACKAGE = REPO / "src" / "thawkit"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
MAX_README_LINES = 300

_FENCE = re.compile(r"^```.*?^```", flags=re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _prose(text: str) -> str:
    """The text without code blocks and code spans (where brackets are code, not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in _FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"^#{1,6} (.+)$", line)
        if m:
            slug, n = _slug(m.group(1)), 1
            while slug in found:  # GitHub numbers repeated headings: x, x-1, x-2
                slug, n = f"{_slug(m.group(1))}-{n}", n + 1
            found.add(slug)
    return found


def links(path: Path) -> list[str]:
    return _LINK.findall(_prose(path.read_text()))


def test_the_readme_is_short() -> None:
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, (
        f"README.md has {n} lines, more than {MAX_README_LINES}: move the detail to a page "
        "in docs/ and link it"
    )


@pytest.mark.parametrize("page", [*PAGES, *sorted((DOCS / "config").glob("*.md"))], ids=_rel)
def test_every_relative_link_leads_to_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: {_rel(dest)} has no heading with the anchor #{anchor}")
    assert not broken, f"{_rel(page)} links to what is not there:\n" + "\n".join(broken)


def test_every_page_of_docs_is_linked_from_the_readme() -> None:
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links(README)}
    pages = [*DOCS.glob("*.md"), DOCS / "config" / "README.md"]
    missing = [_rel(p) for p in pages if p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}: add them to its Documentation table"


def test_every_image_in_docs_is_shown() -> None:
    shown = {(page.parent / t).resolve() for page in PAGES for t in links(page)}
    unused = [_rel(p) for p in (DOCS / "images").glob("*") if p.resolve() not in shown]
    assert not unused, f"{unused} are committed but no page shows them"


# ------------------------------------------------------------ what the text names exists

_PATH = re.compile(r"(?<![\w/.~-])((?:src|tests|tools|benchmarks|notebooks|docs)/[\w./-]*)")
_TEST_ID = re.compile(r"(tests/[\w/]+\.py)::([\w*]+)")
_MODULE = re.compile(r"(?<![\w.])thawkit(?:\.\w+)+")
_MAIN = re.compile(r"python -m (thawkit(?:\.\w+)+)")
NOT_MODULES = {"thawkit.json"}  # the metadata key of an exported model


def _module_file(dotted: str) -> Path | None:
    base = REPO / "src" / Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defines(source: str, name: str) -> bool:
    return bool(
        re.search(rf"^\s*(class|def)\s+{name}\b", source, flags=re.M)
        or re.search(rf"^{name}\s*[:=]", source, flags=re.M)
        or re.search(rf"^from \S+ import .*\b{name}\b", source, flags=re.M)
    )


def _resolves(ref: str) -> bool:
    """`thawkit.a.b` is a module, or `thawkit.a.b.Name` a name a module defines or imports."""
    parts = ref.split(".")
    for cut in range(len(parts), 0, -1):
        path = _module_file(".".join(parts[:cut]))
        if path is not None:
            rest = parts[cut:]
            return not rest or _defines(path.read_text(), rest[0])
    return False


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_named_files_tests_and_modules_exist(page: Path) -> None:
    text = page.read_text()
    gone = []
    for raw in _PATH.findall(text):
        path = raw.rstrip(".,:-")
        if not (REPO / path).exists():
            gone.append(f"{path}: no such file or folder")
    for path, name in _TEST_ID.findall(text):
        source = (REPO / path).read_text() if (REPO / path).is_file() else ""
        tests = re.findall(r"^def (test_\w+)", source, flags=re.M)
        if not fnmatch.filter(tests, name):
            gone.append(f"{path}::{name}: no such test")
    for ref in set(_MODULE.findall(text)) - NOT_MODULES:
        if not _resolves(ref):
            gone.append(f"{ref}: no such module or name in src/thawkit/")
    for ref in _MAIN.findall(text):
        path = _module_file(ref)
        if path is None or "__main__" not in path.read_text():
            gone.append(f"python -m {ref}: not a module that runs as a script")
    assert not gone, f"{_rel(page)} names what the repository no longer has:\n" + "\n".join(gone)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_no_path_of_the_old_layout(page: Path) -> None:
    """Configs live in src/thawkit/conf/ now; `conf/` at the top level is gone.

    A line that starts with `conf/` is an entry of a tree (src/thawkit/'s), not a path.
    """
    old = [
        m.group(0)
        for line in page.read_text().splitlines()
        for m in re.finditer(r"(?<![\w/.])conf/[\w/.]*", line)
        if line[: m.start()].strip()
    ]
    assert not old, f"{_rel(page)} names {old}: the configs are in src/thawkit/conf/"


def test_the_package_tree_of_architecture_md_is_the_tree_of_src() -> None:
    page = (DOCS / "architecture.md").read_text()
    section = page.split("## The package, by role", 1)[1].split("\n## ", 1)[0]
    tree = _FENCE.search(section)
    assert tree, "docs/architecture.md: the package section has no tree"
    listed = set(re.findall(r"^  (\w+(?:/|\.py))\s", tree.group(0), flags=re.M))
    actual = {f"{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    actual |= {p.name for p in PACKAGE.glob("*.py")}
    assert listed == actual, (
        "docs/architecture.md's package tree and src/thawkit/ differ: "
        f"not in the tree {sorted(actual - listed)}, no longer in src/ {sorted(listed - actual)}"
    )


def test_nothing_points_at_a_design_document_outside_the_repository() -> None:
    outside = "DESIGN" + ".md"
    roots = ["src", "tests", "benchmarks", "docs", "notebooks"]
    files = [p for r in roots for p in (REPO / r).rglob("*") if p.is_file()]
    files += [*REPO.glob("*.py"), README, REPO / "Makefile", REPO / "pyproject.toml"]
    hits = []
    for path in files:
        if path.suffix in {".py", ".md", ".ipynb", ".yaml", ".toml", ""} or path.name == "Makefile":
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            if outside in text:
                hits.append(_rel(path))
    assert not hits, f"{hits} cite {outside}: cite docs/architecture.md (in the repository)"


def test_the_config_groups_table_of_architecture_md_lists_every_choice() -> None:
    """The table names each group's choices; they must be the YAML files of its folder."""
    conf = PACKAGE / "conf"
    page = (DOCS / "architecture.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \| .+ \|$", page, flags=re.M)
    table = {group: set(re.findall(r"`(\w+)`", choices)) for group, choices in rows}
    wrong = []
    for group, choices in table.items():
        files = {p.stem for p in (conf / group).glob("*.yaml")}
        if choices != files:
            wrong.append(f"{group}: the table says {sorted(choices)}, conf/ has {sorted(files)}")
    folders = {p.name for p in conf.iterdir() if p.is_dir() and p.name != "__pycache__"}
    unlisted = folders - set(table) - {"hydra", "paths"}
    assert not wrong and not unlisted, (
        "docs/architecture.md's config groups table and src/thawkit/conf/ differ:\n"
        + "\n".join(wrong + [f"{g}: not in the table" for g in sorted(unlisted)])
    )
