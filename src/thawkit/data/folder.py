"""Reading an image folder: layouts, stratified splits, decoding to RGB, and the bad-file check."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
SPLITS = ("train", "val", "test")
Sample = tuple[str, int]


class DataError(ValueError):
    """The image folder cannot be used as it is; the message names the folder and the fix."""


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image fully into 8-bit RGB, respecting EXIF orientation.

    Grayscale, palette, RGBA (alpha dropped) and 16-bit images all become 3-channel uint8.
    """
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(img, dtype=np.float64)
            hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
            img = Image.fromarray(np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8), mode="L")
        if img.mode in ("P", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
        return img.convert("RGB")


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
    )


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_split(folder: Path, class_names: Sequence[str] | None) -> tuple[list[str], list[Sample]]:
    dirs = _class_dirs(folder)
    if not dirs:
        raise DataError(
            f"{folder} has no class folders. Put each class's images in its own subfolder "
            f"({folder}/<class_name>/*.jpg)."
        )
    names = [d.name for d in dirs]
    if class_names is not None:
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise DataError(
                f"{folder} has class folders {unknown} that train/ does not have. Add training "
                f"images for them under train/, or remove them from {folder}."
            )
    else:
        class_names = names
    samples: list[Sample] = []
    for d in dirs:
        files = _image_files(d)
        if not files:
            raise DataError(
                f"Class folder {d} contains no images ({', '.join(IMG_EXTENSIONS[:4])}, ...). "
                "Add images to it or remove the folder."
            )
        label = class_names.index(d.name)
        samples += [(str(f), label) for f in files]
    return list(class_names), samples


def _stratified_split(
    samples: list[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split off `fraction` of every class (at least one image of a class with >= 2)."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    labels = sorted({y for _, y in samples})
    for y in labels:
        members = [s for s in samples if s[1] == y]
        order = rng.permutation(len(members))
        n = int(round(fraction * len(members)))
        n = min(max(n, 1 if len(members) >= 2 and fraction > 0 else 0), len(members) - 1)
        held += [members[i] for i in order[:n]]
        keep += [members[i] for i in order[n:]]
    return keep, held


def discover(
    root: str | os.PathLike, val_fraction: float = 0.15, test_fraction: float = 0.0, seed: int = 0
) -> tuple[list[str], dict[str, list[Sample]]]:
    """Find classes and samples of every split.

    Layouts: `root/{train,val[,test]}/<class>/...`, or `root/<class>/...` split by stratified
    fractions (val_fraction, test_fraction). A `train/` without `val/` is split the same way.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root={root} is not a folder. Point data.root at your image folder.")
    splits: dict[str, list[Sample]] = {}
    if (root / "train").is_dir():
        class_names, splits["train"] = _read_split(root / "train", None)
        for split in ("val", "test"):
            if (root / split).is_dir():
                _, splits[split] = _read_split(root / split, class_names)
    else:
        class_names, splits["train"] = _read_split(root, None)
    if "test" not in splits and test_fraction > 0:
        splits["train"], splits["test"] = _stratified_split(splits["train"], test_fraction, seed)
    if "val" not in splits:
        if not 0 < val_fraction < 1:
            raise DataError(
                f"{root} has no val/ folder and data.val_fraction={val_fraction}; set a fraction "
                "in (0, 1) or add a val/ folder."
            )
        frac = val_fraction / (1 - test_fraction) if "test" in splits and test_fraction else val_fraction
        splits["train"], splits["val"] = _stratified_split(splits["train"], frac, seed + 1)
    return class_names, splits


def _problem(path: str) -> str | None:
    if os.path.getsize(path) == 0:
        return "zero-byte file"
    try:
        load_rgb(path)
    except Exception as e:  # PIL raises many types for broken files
        return f"{type(e).__name__}: {e}"
    return None


def find_bad_images(paths: Sequence[str], workers: int | None = None) -> dict[str, str]:
    """Decode every file once (in threads: PIL releases the GIL); returns {path: problem}."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(pool.map(_problem, paths, chunksize=16))
    return {p: why for p, why in zip(paths, problems, strict=True) if why}
