"""One file policy for training, evaluate and predict, over every kind of odd file (a table)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from conftest import write_image
from thawkit.data import ImageFolderDataModule
from thawkit.data.file_policy import ImageTooLarge, scan_images
from thawkit.data.folder import DataError, load_rgb
from thawkit.inference.evaluate import select_samples
from thawkit.inference.predict import find_images

IMAGE = "image"  # trained on
UNLISTED = None  # not an image: neither trained on nor listed


def _image(path: Path) -> None:
    write_image(path, 0 if "ants" in str(path) else 1, seed=len(str(path)))


def _truncated(path: Path) -> None:
    _image(path.with_suffix(".png"))
    data = path.with_suffix(".png").read_bytes()
    path.with_suffix(".png").unlink()
    path.write_bytes(data[: len(data) // 2])


def _huge(path: Path) -> None:
    # 100 million pixels: above PIL's warning size (89.5 M), below its error size; 1-bit, tiny.
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("1", (10_000, 10_000)).save(path)


def _dangling(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.parent / "nowhere.jpg")


def _link_to_image(path: Path) -> None:
    target = path.parent / "target_of_link.png"
    path.symlink_to(target)  # the target itself is a row of the table


def _loop(path: Path) -> None:
    path.symlink_to(path.parent, target_is_directory=True)


def _text(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not an image")


def _zero(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


# (path under the root, how to make it, what becomes of it: IMAGE, UNLISTED or a reason)
TABLE = [
    *[(f"ants/{i:02d}.png", _image, IMAGE) for i in range(6)],
    *[(f"bees/{i:02d}.png", _image, IMAGE) for i in range(6)],
    ("ants/UPPER.JPG", _image, IMAGE),
    ("ants/nested/deeper/n.png", _image, IMAGE),
    (os.fsdecode(b"bees/bad\xff.png"), _image, IMAGE),
    ("bees/target_of_link.png", _image, IMAGE),
    ("bees/link.png", _link_to_image, IMAGE),
    ("ants/.thumbnails/t.jpg", _image, "hidden folder"),
    ("ants/@eaDir/e.jpg", _image, "NAS/system folder"),
    ("bees/#recycle/r.jpg", _image, "NAS/system folder"),
    ("bees/__MACOSX/m.jpg", _image, "NAS/system folder"),
    ("#recycle/old.jpg", _image, "NAS/system folder"),  # at the root: not a class
    (".git/x.png", _image, "hidden folder"),
    ("ants/._00.png", _text, "AppleDouble"),
    ("ants/.DS_Store", _text, UNLISTED),
    ("ants/labels.txt", _text, UNLISTED),
    ("bees/gone.jpg", _dangling, "dangling symlink"),
    ("bees/loop", _loop, UNLISTED),
    ("ants/truncated.jpg", _truncated, "truncated"),
    ("ants/zero.jpg", _zero, "zero-byte file"),
    ("bees/huge.png", _huge, "too large"),
]
# What the listing says: the ignored folder, not each file in it.
LISTED_AS = {"ants/.thumbnails/t.jpg": "ants/.thumbnails", "ants/@eaDir/e.jpg": "ants/@eaDir",
             "bees/#recycle/r.jpg": "bees/#recycle", "bees/__MACOSX/m.jpg": "bees/__MACOSX",
             "#recycle/old.jpg": "#recycle", ".git/x.png": ".git"}  # fmt: skip
BAD = {"truncated", "zero-byte file", "too large"}  # found by decoding (training's check)


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for rel, make, _ in TABLE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make(root / rel)
    return root


def _expected(root: Path, bad_too: bool) -> tuple[set[str], dict[str, str]]:
    images = {str(root / rel) for rel, _, fate in TABLE if fate == IMAGE}
    listed = {
        str(root / LISTED_AS.get(rel, rel)): fate
        for rel, _, fate in TABLE
        if fate not in (IMAGE, UNLISTED) and (bad_too or fate not in BAD)
    }
    if not bad_too:
        images |= {str(root / rel) for rel, _, fate in TABLE if fate in BAD}
    return images, listed


def _check(skipped: dict[str, str], listed: dict[str, str]) -> None:
    assert set(skipped) == set(listed)
    for path, reason in listed.items():
        assert reason in skipped[path], (path, skipped[path])


def test_training_uses_or_lists_every_file(odd_folder: Path, caplog) -> None:
    dm = ImageFolderDataModule(
        root=str(odd_folder), preprocessing="test_efficientnet", num_workers=0, image_size=32
    )
    with caplog.at_level(logging.INFO):
        dm.setup()
    images, listed = _expected(odd_folder, bad_too=True)
    assert {p for samples in dm.splits.values() for p, _ in samples} == images
    _check(dm.skipped_files, listed)
    for path in listed:  # every one named in the log
        assert path in caplog.text
    assert dm.class_names == ["ants", "bees"]


def test_predict_and_evaluate_read_the_folder_as_training_does(odd_folder: Path) -> None:
    images, listed = _expected(odd_folder, bad_too=False)
    assert {str(p) for p in find_images(odd_folder)} == images  # decoding comes later
    model = SimpleNamespace(data={}, class_names=["ants", "bees"], path=odd_folder / "m.ckpt")
    skipped: dict[str, str] = {}
    _, split, samples = select_samples(model, odd_folder, "all", skipped)
    assert split == "all" and {p for p, _ in samples} == images
    _check(skipped, listed)
    found, left_out = scan_images(odd_folder)
    assert {str(p) for p in found} == images and left_out == skipped


def test_image_above_the_bomb_limit_is_refused_by_name_not_decoded(odd_folder: Path) -> None:
    huge = odd_folder / "bees" / "huge.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's unnamed DecompressionBombWarning would raise
        with pytest.raises(ImageTooLarge, match=r"10000 x 10000 = 100000000 pixels"):
            load_rgb(huge)
    dm = ImageFolderDataModule(
        root=str(odd_folder),
        preprocessing="test_efficientnet",
        num_workers=0,
        image_size=32,
        on_bad_image="error",
    )
    with pytest.raises(DataError, match="huge.png: ImageTooLarge: too large"):
        dm.setup()
