"""The docs cannot drift: docs/config/ documents exactly the options of the composed configs,
and the troubleshooting page quotes errors that thawkit still raises.

`tools/config_docs.py` holds the reading and comparing; its `--check` prints the same list.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from config_docs import CONF, DOCS, REPO, problems, read_groups, read_tables  # noqa: E402

from thawkit.config import schema  # noqa: E402

TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"


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
    """A copy of conf/ and docs/config/ that a test may change; config_docs reads the copy.

    Composing every choice of every group takes a while: the tests that change the copy compose
    only the groups they change (`problems(only=...)`)."""
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
    """A new schema field is a new option of every choice that uses the schema."""
    import config_docs

    _, docs = scratch_repo
    wider = dataclasses.make_dataclass(
        "UnfreezeSchema",
        [("warmup_groups", int, dataclasses.field(default=2))],
        bases=(schema.UnfreezeSchema,),
    )
    ConfigStore.instance().store(
        group="strategy", name="base_unfreeze", node={"strategy": wider}, package="_global_"
    )
    try:
        found = config_docs.problems({"strategy"})
        assert len(found) == 1, found
        assert "`strategy.warmup_groups`" in found[0]
        assert "src/thawkit/conf/strategy/" in found[0] and "docs/config/strategy.md" in found[0]

        # The rewrite adds the row, with values, and an empty hand-written cell still fails.
        config_docs.write({"strategy"})
        found = config_docs.problems({"strategy"})
    finally:
        schema.register()
    assert found == [
        "docs/config/strategy.md, `strategy.warmup_groups`: the 'when to change it' cell is "
        "empty: write it"
    ]
    row = next(ln for ln in (docs / "strategy.md").read_text().splitlines() if "warmup" in ln)
    assert "`2`" in row and row.count("`2`") == 7  # every strategy but auto


def test_a_key_that_no_schema_has_does_not_compose(scratch_repo) -> None:
    import config_docs

    conf, _ = scratch_repo
    path = conf / "strategy" / "gradual.yaml"
    path.write_text(path.read_text() + "  warmup_groups: 2\n")
    found = config_docs.problems({"strategy"})
    assert any(
        p.startswith("src/thawkit/conf/strategy/gradual.yaml does not compose (strategy=gradual)")
        for p in found
    ), found


def test_a_removed_option_fails_naming_it(scratch_repo) -> None:
    import config_docs

    conf, _ = scratch_repo
    path = conf / "callbacks" / "default.yaml"
    path.write_text(re.sub(r"^  save_top_k: 1\n", "", path.read_text(), flags=re.M))
    found = config_docs.problems({"callbacks"})
    assert len(found) == 1, found
    assert "documents `callbacks.last_checkpoint.save_top_k`" in found[0]
    assert "no longer has" in found[0]


def test_a_changed_default_fails(scratch_repo) -> None:
    import config_docs

    conf, _ = scratch_repo
    path = conf / "model" / "default.yaml"
    path.write_text(path.read_text() + "lr_decay: 0.7\n")
    found = config_docs.problems({"model"})
    assert len(found) == 1 and "`model.lr_decay`" in found[0] and "0.7" in found[0], found


def test_the_tables_show_the_schema_defaults() -> None:
    """What a choice's file leaves out is the schema's default, in every column."""
    groups = read_groups()
    lr_decay = groups["model"].options["model.lr_decay"]
    assert set(lr_decay) == {"default", "efficientnet_lite1", "efficientnet_lite2", "resnet18"}
    assert set(lr_decay.values()) == {schema.ModelSchema.lr_decay}
    gradual = groups["strategy"].options["strategy.max_groups"]
    assert gradual["gradual"] is None and "auto" not in gradual  # auto has no max_groups
    assert groups["trainer"].options["trainer.enable_progress_bar"]["default"] is None


def test_a_new_group_and_a_new_choice_fail_until_documented(scratch_repo) -> None:
    import config_docs

    GROUPS = {"newgroup", "strategy"}  # noqa: N806 - only these are composed (time)
    conf, docs = scratch_repo
    (conf / "newgroup").mkdir()
    (conf / "newgroup" / "on.yaml").write_text(
        "# @package _global_\nhydra:\n  job:\n    env_set:\n      NEWGROUP: '1'\n"
    )
    (conf / "strategy" / "newchoice.yaml").write_text(
        "# @package _global_\ndefaults:\n  - base_unfreeze\n  - _self_\n"
        "strategy:\n  name: newchoice\n"
    )
    found = config_docs.problems(GROUPS)
    assert any(
        "src/thawkit/conf/newgroup/ has no options table in docs/config/newgroup.md" in p
        for p in found
    )
    assert any("choice columns" in p and "'newchoice'" in p for p in found)

    config_docs.write(GROUPS)  # skeleton page and column; then the hand-written parts
    found = config_docs.problems(GROUPS)
    empty = (
        "docs/config/newgroup.md, `hydra.job.env_set.NEWGROUP`: the 'when to change it' cell is "
        "empty"
    )
    assert f"{empty}: write it" in found
    assert "docs/config/README.md does not link newgroup.md: add it to the index" in found
    assert (docs / "newgroup.md").read_text().count("<!-- options: newgroup -->") == 1


def test_the_pages_are_what_the_rewrite_writes(scratch_repo) -> None:
    """The committed tables are exactly what `python tools/config_docs.py` writes."""
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
