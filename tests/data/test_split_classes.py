"""A class without images in a split is named in a warning and recorded, never scored as 0."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from conftest import make_image_folder
from thawkit.data import ImageFolderDataModule
from thawkit.data.folder import DataError, discover


def _dm(root: Path) -> ImageFolderDataModule:
    return ImageFolderDataModule(
        root=str(root), preprocessing="test_efficientnet", num_workers=0, image_size=32
    )


def test_class_missing_from_the_val_folder_is_named(tmp_path: Path, caplog) -> None:
    root = make_image_folder(tmp_path / "a", (6, 6, 6), ("train", "val"))
    shutil.rmtree(root / "val" / "class_2")
    dm = _dm(root)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert dm.classes_without_images == {"val": ["class_2"]}
    assert "val split has no images of class(es) ['class_2']" in caplog.text


def test_single_image_class_of_a_flat_folder_is_named(tmp_path: Path, caplog) -> None:
    root = make_image_folder(tmp_path / "flat", {"a": 8, "b": 8, "lonely": 1}, ())
    dm = _dm(root)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert dm.class_counts["val"]["lonely"] == 0 and dm.class_counts["train"]["lonely"] == 1
    assert dm.classes_without_images == {"val": ["lonely"]}
    assert "['lonely']" in caplog.text and "at least 2" in caplog.text


def test_class_folder_name_that_is_not_utf8_is_refused_by_name(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "a", {"a": 3, os.fsdecode(b"b\xff"): 3}, ())
    with pytest.raises(DataError, match=r"b\\xff'.*not valid UTF-8.*Rename it"):
        discover(root)
