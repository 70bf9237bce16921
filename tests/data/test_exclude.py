"""data.exclude: training leaves out exactly the listed files, and bad lists fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_image_folder, tiny_cfg
from thawkit.data import ImageFolderDataModule, folder
from thawkit.data.exclude import ExcludeError, apply_exclude

PRE = "test_efficientnet"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images", (8, 8), ("train", "val"))


def all_paths(splits: dict) -> set[str]:
    return {p for samples in splits.values() for p, _ in samples}


def test_a_text_file_removes_exactly_its_files_from_every_split(root: Path, tmp_path: Path) -> None:
    listed = [root / "train" / "class_0" / "001.png", root / "val" / "class_1" / "000.png"]
    text = tmp_path / "drop.txt"
    # A comment, a blank line, an absolute path and one relative to data.root.
    text.write_text(f"# reviewed\n\n{listed[0]}\nval/class_1/000.png\n")
    dm = ImageFolderDataModule(str(root), preprocessing=PRE, num_workers=0, exclude=str(text))
    dm.setup()
    before = all_paths(folder.discover(root)[1])
    assert all_paths(dm.splits) == before - {str(p) for p in listed}
    assert dm.excluded_files["count"] == 2
    assert dm.excluded_files["files"] == {"train": [str(listed[0])], "val": [str(listed[1])]}


def test_an_audit_json_removes_what_its_entries_exclude(root: Path, tmp_path: Path) -> None:
    a, b = root / "train" / "class_0" / "002.png", root / "train" / "class_1" / "003.png"
    record = {
        "counts": {"leakage": 1, "label_issues": 1, "outliers": 1},
        "leakage": [{"files": [], "score": 1.0, "action": "x", "exclude": [str(a)]}],
        "label_issues": [{"files": [], "score": 0.1, "action": "x", "exclude": [str(b)]}],
        "outliers": [{"files": [], "score": 4.0, "action": "look", "exclude": []}],
    }
    source = tmp_path / "audit.json"
    source.write_text(json.dumps(record))
    names, splits = folder.discover(root)
    kept, done = apply_exclude(splits, source, root, names)
    assert all_paths(splits) - all_paths(kept) == {str(a), str(b)}
    assert done["count"] == 2 and done["source"] == str(source)


def test_summary_records_the_excluded_files(root: Path, tmp_path: Path) -> None:
    from thawkit.reporting.summary import RunSummary
    from thawkit.run.train import build

    text = tmp_path / "drop.txt"
    text.write_text("train/class_0/000.png\n")
    datamodule, _, trainer = build(tiny_cfg(tmp_path, [f"data.exclude={text}"], data_root=root))
    summary = next(c for c in trainer.callbacks if isinstance(c, RunSummary))
    assert summary.extra["excluded_files"]["files"] == {
        "train": [str(root / "train" / "class_0" / "000.png")]
    }
    assert str(root / "train" / "class_0" / "000.png") not in all_paths(datamodule.splits)


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (None, "missing.txt", "does not exist"),
        ("{not json", "audit.json", "not valid JSON"),
        ('{"some": "thing"}', "audit.json", "not an audit.json"),
        ("train/class_0/nope.png\n", "drop.txt", "1 path\\(s\\) of data.exclude=.* match no image"),
    ],
)
def test_a_bad_exclude_list_is_a_clear_error(
    root: Path, tmp_path: Path, content: str | None, name: str, message: str
) -> None:
    source = tmp_path / name
    if content is not None:
        source.write_text(content)
    names, splits = folder.discover(root)
    with pytest.raises(ExcludeError, match=message):
        apply_exclude(splits, source, root, names)


def test_excluding_a_whole_class_of_train_is_refused(root: Path, tmp_path: Path) -> None:
    text = tmp_path / "drop.txt"
    text.write_text("".join(f"train/class_1/{i:03d}.png\n" for i in range(8)))
    names, splits = folder.discover(root)
    with pytest.raises(ExcludeError, match=r"every training image of class\(es\) \['class_1'\]"):
        apply_exclude(splits, text, root, names)
