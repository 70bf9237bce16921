"""The data audit finds what was planted: leakage, duplicates, swapped labels, unusable images."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from conftest import CONF_DIR, TINY_BACKBONE, make_image_folder, write_image
from thawkit import cli
from thawkit.audit.command import audit
from thawkit.audit.report import KINDS
from thawkit.data import folder
from thawkit.data.exclude import apply_exclude

# The tiny random backbone at 32 px; 24 px test images are not "tiny" here.
TINY = [
    f"model.backbone={TINY_BACKBONE}",
    "model.weights=none",
    "data.image_size=32",
    "data.batch_size=16",
    "min_side=8",
    "progress=false",
]


LEAK_NAME = os.fsdecode(b"leak\xe9.png")


def planted_folder(root: Path) -> dict[str, Path]:
    """A 2-class train/val/test folder with one plant of each kind; {plant: its file}."""
    make_image_folder(root, (14, 14), ("train", "val", "test"))
    train, val = root / "train", root / "val"
    plants = {
        # A file name that is not UTF-8 (thawkit.textio): audit.json must name it exactly.
        "leak": shutil.copy(train / "class_0" / "003.png", val / "class_0" / LEAK_NAME),
        "dup": shutil.copy(train / "class_1" / "004.png", train / "class_1" / "dup.png"),
        # Images of class 0's colour filed under class 1.
        "swap_a": write_image(train / "class_1" / "swap_a.png", 0, seed=901),
        "swap_b": write_image(train / "class_1" / "swap_b.png", 0, seed=902),
        "flat": root / "train" / "class_0" / "flat.png",
    }
    Image.new("RGB", (30, 30), (120, 120, 120)).save(plants["flat"])
    return {k: Path(v) for k, v in plants.items()}


def audit_cfg(root: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("audit", [f"data.root={root}", *TINY, *overrides])


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, Path], Path]:
    base = tmp_path_factory.mktemp("audit")
    plants = planted_folder(base / "images")
    # As a user runs it: `thawkit audit data.root=... hydra.run.dir=...`.
    torch.manual_seed(0)  # the tiny backbone's random weights (model.weights=none)
    GlobalHydra.instance().clear()
    cli.main(
        [
            "audit",
            f"data.root={base / 'images'}",
            *TINY,
            "gallery=6",
            f"hydra.run.dir={base / 'out'}",
        ]
    )
    GlobalHydra.instance().clear()
    record = json.loads((base / "out" / "audit.json").read_text())
    return record, plants, base / "out"


def paths_of(entries: list[dict]) -> list[set[str]]:
    return [{f["path"] for f in e["files"]} for e in entries]


def test_leakage_across_splits_is_found_and_listed_first(audited) -> None:
    record, plants, out = audited
    original = str(plants["flat"].parent / "003.png")
    assert paths_of(record["leakage"])[0] == {str(plants["leak"]), original}
    entry = record["leakage"][0]
    assert entry["match"] == "exact" and entry["score"] == 1.0
    # The copy outside the latest split goes: the val copy stays, the train copy is excluded.
    assert entry["exclude"] == [original]
    assert [k for k in record if k in KINDS] == list(KINDS)  # leakage first


def test_data_exclude_of_the_audit_removes_what_its_entries_exclude(audited) -> None:
    record, plants, out = audited
    root = plants["flat"].parents[2]
    names, splits = folder.discover(root)
    kept, done = apply_exclude(splits, out / "audit.json", root, names)
    listed = {p for kind in KINDS for e in record[kind] for p in e["exclude"]}
    assert {str(plants["dup"]), str(plants["swap_a"]), str(plants["flat"])} <= listed
    before = {p for v in splits.values() for p, _ in v}
    assert before - {p for v in kept.values() for p, _ in v} == listed
    assert str(plants["leak"]) in {p for p, _ in kept["val"]}  # the val copy stays


def test_exact_duplicates_within_a_split(audited) -> None:
    record, plants, _ = audited
    dup = str(plants["dup"])
    found = [e for e in record["duplicates"] if dup in {f["path"] for f in e["files"]}]
    assert len(found) == 1 and found[0]["exclude"] == [dup]
    assert all(len({f["split"] for f in e["files"]}) == 1 for e in record["duplicates"])


def test_swapped_labels_are_the_top_label_issues(audited) -> None:
    record, plants, _ = audited
    top = [e["files"][0]["path"] for e in record["label_issues"][:4]]
    assert {str(plants["swap_a"]), str(plants["swap_b"])} <= set(top), record["label_issues"]
    first = next(
        e for e in record["label_issues"] if e["files"][0]["path"] == str(plants["swap_a"])
    )
    assert first["given"] == "class_1" and first["suggested"] == "class_0"
    scores = [e["score"] for e in record["label_issues"]]
    assert scores == sorted(scores)  # most likely (lowest p of the given label) first


def test_a_nearly_constant_image_is_unusable(audited) -> None:
    record, plants, _ = audited
    flat = [e for e in record["unusable"] if e["files"][0]["path"] == str(plants["flat"])]
    assert flat and "nearly constant" in flat[0]["action"]
    assert len(record["unusable"]) == 1  # the noisy 24 px images are fine at min_side=8


def test_the_run_dir_holds_json_markdown_and_galleries(audited) -> None:
    record, _, out = audited
    assert record["counts"]["leakage"] >= 1
    text = (out / "audit.md").read_text(errors="surrogateescape")  # the file name's own bytes
    assert "| leakage |" in text and "gallery_leakage.png" in text and LEAK_NAME in text
    for kind in ("leakage", "duplicates", "label_issues", "unusable"):
        assert (out / f"gallery_{kind}.png").stat().st_size > 1000


def test_an_earlier_audit_is_never_overwritten(audited, tmp_path: Path) -> None:
    _, plants, out = audited
    root = plants["flat"].parents[2]
    with pytest.raises(FileExistsError, match="already holds an audit"):
        audit(audit_cfg(root, "gallery=0"), out)


def test_a_near_duplicate_by_resizing_is_found(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", (8, 8), ("train", "val"))
    original = root / "train" / "class_0" / "002.png"
    copy = root / "train" / "class_0" / "resized.jpg"
    Image.open(original).resize((40, 40), Image.Resampling.BICUBIC).save(copy, quality=90)
    torch.manual_seed(0)  # the tiny backbone's random weights (model.weights=none)
    record = audit(audit_cfg(root, "gallery=0", "near_duplicate_threshold=0.9"), tmp_path / "o")
    pairs = paths_of(record["near_duplicates"])
    assert pairs[0] == {str(original), str(copy)}, record["near_duplicates"][:3]
