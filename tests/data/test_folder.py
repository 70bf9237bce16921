"""Reading image folders: layouts, decoding every image kind to RGB, bad files, clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image_folder, write_image
from thawkit.data import ImageFolderDataModule
from thawkit.data.folder import DataError, discover, find_bad_images, image_problem, load_rgb


def _dm(root: Path, **kwargs) -> ImageFolderDataModule:
    kwargs.setdefault("preprocessing", "test_efficientnet")
    return ImageFolderDataModule(root=str(root), num_workers=0, image_size=32, **kwargs)


# ------------------------------------------------------------------ decoding to RGB
def test_every_image_kind_becomes_8bit_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    sixteen = (np.linspace(0, 65535, 20 * 30).reshape(20, 30)).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode == "I;16"
    for name in ("gray.png", "palette.png", "rgba.png", "la.png", "cmyk.jpg", "sixteen.png"):
        img = load_rgb(tmp_path / name)
        assert img.mode == "RGB" and img.size == (30, 20), name
    # 16-bit values are scaled to 8 bits, not clipped: the full range survives.
    arr = np.asarray(load_rgb(tmp_path / "sixteen.png"))
    assert arr.min() == 0 and arr.max() == 255 and len(np.unique(arr)) > 200


def test_exif_orientation_is_respected(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = load_rgb(tmp_path / "rotated.jpg")
    assert out.size == (20, 40)  # displayed upright: width and height swapped
    top = np.asarray(out)[:5].mean()
    assert top > 200  # the white half ends on top after a 90 degree clockwise turn


# ------------------------------------------------------------------ layouts
def test_split_folders_and_fractions(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "a", (10, 10), ("train", "val", "test"))
    names, splits = discover(root)
    assert names == ["class_0", "class_1"] and set(splits) == {"train", "val", "test"}

    flat = make_image_folder(tmp_path / "b", (20, 10), ())
    names, splits = discover(flat, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert set(splits) == {"train", "val", "test"}
    for split in ("val", "test"):  # stratified: every class in every split, 20 % of each
        labels = [y for _, y in splits[split]]
        assert labels.count(0) == 4 and labels.count(1) == 2
    all_paths = [p for s in splits.values() for p, _ in s]
    assert len(all_paths) == len(set(all_paths)) == 30

    aliased = make_image_folder(tmp_path / "c", (6, 6), ("train", "valid"))
    _, splits = discover(aliased)
    assert set(splits) == {"train", "val"} and all("/valid/" in p for p, _ in splits["val"])


def test_non_image_and_hidden_files_are_ignored(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", (4, 4), ("train", "val"))
    (root / "train" / "class_0" / "notes.txt").write_text("not an image")
    (root / "train" / "class_0" / "._0001.png").write_bytes(b"\x00\x05\x16\x07")  # macOS fork
    (root / "train" / ".DS_Store").write_bytes(b"\x00")
    write_image(root / "train" / "class_0" / "nested" / "deep.png", 0)
    _, splits = discover(root)
    paths = [p for p, _ in splits["train"]]
    assert len(paths) == 9 and any(p.endswith("nested/deep.png") for p in paths)
    assert not any(p.endswith((".txt", "._0001.png")) for p in paths)


# ------------------------------------------------------------------ clear errors
def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "e", (4, 4), ("train", "val"))
    empty = root / "train" / "class_2"
    empty.mkdir()
    (empty / "readme.txt").write_text("images go here")
    with pytest.raises(DataError, match="class_2 contains no images") as err:
        _dm(root).setup()
    assert str(empty) in str(err.value) and "remove the folder" in str(err.value)


def test_class_missing_from_train_is_named(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "f", (4, 4), ("train", "val", "test"))
    write_image(root / "test" / "wasps" / "0.png", 2)
    with pytest.raises(DataError, match=r"\['wasps'\]") as err:
        _dm(root).setup()
    msg = str(err.value)
    assert str(root / "test") in msg and str(root / "train") in msg and "Add training" in msg


def test_root_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "loose"
    for i in range(3):
        write_image(root / f"{i}.png", i)
    with pytest.raises(DataError, match="has no class folders") as err:
        _dm(root).setup()
    assert str(root) in str(err.value) and "<class_name>" in str(err.value)
    with pytest.raises(DataError, match="only one class folder"):
        _dm(make_image_folder(tmp_path / "one", (4,), ())).setup()
    with pytest.raises(DataError, match="is not a folder"):
        _dm(tmp_path / "nowhere").setup()


def test_val_without_train_is_an_error(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "g", (4, 4), ("val",))
    with pytest.raises(DataError, match="no train/ folder"):
        discover(root)


def test_a_class_left_empty_by_bad_files_is_an_error(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "h", (4, 4), ("train", "val"))
    for p in (root / "train" / "class_1").iterdir():
        p.write_bytes(b"")
    with pytest.raises(DataError, match=r"no images of class\(es\) \['class_1'\]"):
        _dm(root).setup()


# ------------------------------------------------------------------ the bad-file check
def test_bad_files_are_found_and_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    root = make_image_folder(tmp_path / "i", (6, 6), ("train", "val"))
    good = write_image(tmp_path / "big.jpg", 0, size=64)
    data = good.read_bytes()
    truncated = root / "train" / "class_0" / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    zero = root / "val" / "class_1" / "zero.png"
    zero.write_bytes(b"")
    fake = root / "train" / "class_1" / "fake.png"
    fake.write_text("<html>404</html>")
    bad = find_bad_images([str(truncated), str(zero), str(fake), str(good)])
    assert set(bad) == {str(truncated), str(zero), str(fake)}
    assert "truncated" in bad[str(truncated)] and bad[str(zero)] == "zero-byte file"
    assert image_problem(str(good)) is None

    with caplog.at_level(logging.INFO, logger="thawkit.data"):
        dm = _dm(root)
        dm.setup()
    assert set(dm.skipped_files) == {str(truncated), str(zero), str(fake)}
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for p in (truncated, zero, fake):
        assert str(p) in warned
    expected = {"train": {"class_0": 6, "class_1": 6}, "val": {"class_0": 2, "class_1": 2}}
    assert dm.class_counts == expected
    # The console table of per-class counts, every split.
    table = next(r.getMessage() for r in caplog.records if "Images per class" in r.getMessage())
    assert "class_0" in table and "train" in table and "val" in table

    with pytest.raises(DataError, match="3 unreadable image") as err:
        _dm(root, on_bad_image="error").setup()
    for p in (truncated, zero, fake):
        assert str(p) in str(err.value)


def test_parallel_scan_equals_the_serial_path(tmp_path: Path) -> None:
    """The scan in threads gives the verdicts, in the order, of checking one file at a time,
    and its verdicts kept in the persistent cache are those a serial scan reads back."""
    from thawkit.data.disk_cache import DiskCache
    from thawkit.data.scan_cache import find_bad_images as cached_scan

    root = make_image_folder(tmp_path / "i", (8, 8), ("train",))
    good = sorted(str(p) for p in (root / "train").rglob("*.png"))
    data = write_image(tmp_path / "big.jpg", 0, size=64).read_bytes()
    truncated = root / "train" / "class_0" / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    zero = root / "train" / "class_1" / "zero.png"
    zero.write_bytes(b"")
    paths = [good[0], str(zero), *good[1:9], str(truncated), *good[9:]]
    serial = find_bad_images(paths, workers=1)
    parallel = find_bad_images(paths, workers=4)
    assert list(parallel.items()) == list(serial.items())
    assert list(serial) == [str(zero), str(truncated)]
    first, checked = cached_scan(paths, str(root), DiskCache(tmp_path / "cache"), workers=4)
    again, rechecked = cached_scan(paths, str(root), DiskCache(tmp_path / "cache"), workers=1)
    assert list(first.items()) == list(again.items()) == list(serial.items())
    assert (checked, rechecked) == (len(paths), 0)
