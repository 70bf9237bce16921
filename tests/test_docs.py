"""The docs cannot drift: docs/config/ documents exactly the options of conf/, and the
troubleshooting page quotes errors that thawkit still raises.

`tests/config_docs.py` holds the reading and comparing; its `--check` prints the same list.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from config_docs import CONF, DOCS, REPO, problems, read_groups, read_tables

TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"
README_DRAFT = REPO / "docs" / "readme" / "notebooks_and_docs.md"


def test_config_docs_match_the_configs() -> None:
    found = problems()
    assert not found, "docs/config/ and conf/ differ:\n" + "\n".join(f"- {p}" for p in found)


def test_every_group_and_choice_has_a_table() -> None:
    groups = read_groups()
    assert {"strategy", "model", "data", "augment", "train", "hydra/launcher"} <= set(groups)
    for group in groups.values():
        table = read_tables(group.page)[group.name]
        assert table.header[1:-1] == group.choices
        assert set(table.rows) == set(group.options)


@pytest.fixture
def scratch_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A copy of conf/ and docs/config/ that a test may change; config_docs reads the copy."""
    import config_docs

    conf, docs = tmp_path / "conf", tmp_path / "docs" / "config"
    shutil.copytree(CONF, conf)
    shutil.copytree(DOCS, docs)
    monkeypatch.setattr(config_docs, "REPO", tmp_path)
    monkeypatch.setattr(config_docs, "CONF", conf)
    monkeypatch.setattr(config_docs, "DOCS", docs)
    assert config_docs.problems() == []
    return conf, docs


def test_an_undocumented_option_fails_naming_it_and_the_page(scratch_repo) -> None:
    import config_docs

    conf, docs = scratch_repo
    path = conf / "strategy" / "gradual.yaml"
    path.write_text(path.read_text() + "  warmup_groups: 2\n")
    found = config_docs.problems()
    assert len(found) == 1, found
    assert "`strategy.warmup_groups`" in found[0]
    assert "src/thawkit/conf/strategy/" in found[0] and "docs/config/strategy.md" in found[0]

    # The rewrite adds the row, with values, and an empty hand-written cell still fails.
    config_docs.write()
    found = config_docs.problems()
    assert found == [
        "docs/config/strategy.md, `strategy.warmup_groups`: the 'when to change it' cell is "
        "empty: write it"
    ]
    row = next(ln for ln in (docs / "strategy.md").read_text().splitlines() if "warmup" in ln)
    assert "`2`" in row


def test_a_removed_option_fails_naming_it(scratch_repo) -> None:
    import config_docs

    conf, _ = scratch_repo
    path = conf / "data" / "default.yaml"
    path.write_text(re.sub(r"^check_images: true\n", "", path.read_text(), flags=re.M))
    found = config_docs.problems()
    assert len(found) == 1, found
    assert "documents `data.check_images`" in found[0] and "no longer has" in found[0]


def test_a_changed_default_fails(scratch_repo) -> None:
    import config_docs

    conf, _ = scratch_repo
    path = conf / "model" / "default.yaml"
    path.write_text(path.read_text().replace("lr_decay: 0.8", "lr_decay: 0.7"))
    found = config_docs.problems()
    assert len(found) == 1 and "`model.lr_decay`" in found[0] and "0.7" in found[0], found


def test_a_new_group_and_a_new_choice_fail_until_documented(scratch_repo) -> None:
    import config_docs

    conf, docs = scratch_repo
    (conf / "newgroup").mkdir()
    (conf / "newgroup" / "on.yaml").write_text("# @package callbacks.newgroup\ndecay: 0.999\n")
    (conf / "strategy" / "newchoice.yaml").write_text(
        "# @package _global_\nstrategy:\n  name: newchoice\n  initial_groups: 0\n"
    )
    found = config_docs.problems()
    assert any(
        "src/thawkit/conf/newgroup/ has no options table in docs/config/newgroup.md" in p
        for p in found
    )
    assert any("choice columns" in p and "'newchoice'" in p for p in found)

    config_docs.write()  # skeleton page and column; then the hand-written parts
    found = config_docs.problems()
    empty = (
        "docs/config/newgroup.md, `callbacks.newgroup.decay`: the 'when to change it' cell is empty"
    )
    assert f"{empty}: write it" in found
    assert "docs/config/README.md does not link newgroup.md: add it to the index" in found
    assert (docs / "newgroup.md").read_text().count("<!-- options: newgroup -->") == 1


def test_the_pages_are_what_the_rewrite_writes(scratch_repo) -> None:
    """The committed tables are exactly what `python tests/config_docs.py` writes."""
    import config_docs

    assert config_docs.write() == []


def _source_text() -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / "src" / "thawkit").rglob("*.py")))


def test_troubleshooting_quotes_messages_that_thawkit_still_raises() -> None:
    quoted = re.findall(r"^> `(.+)`$", TROUBLESHOOTING.read_text(), flags=re.M)
    assert len(quoted) >= 40
    source = _source_text()
    gone = [q for q in quoted if q not in source]
    assert not gone, (
        f"docs/troubleshooting.md quotes messages that src/thawkit/ no longer has: {gone}. "
        "Update the page to the new wording."
    )


def test_troubleshooting_covers_every_error_class() -> None:
    classes = re.findall(r"^class (\w+)\((?:\w*Error|SystemExit)\)", _source_text(), flags=re.M)
    assert {"ConfigError", "DataError", "WeightsError", "RunDirError"} <= set(classes)
    page = TROUBLESHOOTING.read_text()
    missing = [c for c in classes if f"`{c}`" not in page]
    assert not missing, f"docs/troubleshooting.md does not explain {missing}: add a section each"
