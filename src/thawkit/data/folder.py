"""Reading an image folder: layouts, stratified splits, decoding to RGB, and the bad-file check."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from rich.progress import track

from thawkit.data.file_policy import (
    IMG_EXTENSIONS,
    has_image_extension,
    ignored_folder,
    open_image,
    scan_images,
)

log = logging.getLogger(__name__)

# Accepted names of the split folders; the first is the canonical split name.
SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
Sample = tuple[str, int]
# Side (px) that the bad-image check decodes JPEGs down to: libjpeg's DCT scaling reads every
# byte (truncation and corrupt data still fail) at a fraction of the cost of a full decode.
_CHECK_DRAFT_SIZE = 64


class DataError(ValueError):
    """The image folder cannot be used as it is; the message names the folder and the fix."""


def _to_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and 32-bit grayscale: PIL's convert("L") clips instead of scaling.
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("P", "PA", "LA", "La"):
        # Palette transparency and grey+alpha go through RGBA so colours resolve correctly.
        img = img.convert("RGBA")
    return img.convert("RGB")  # RGBA/La drop alpha, as torchvision's ImageFolder loader does


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image fully into 8-bit RGB, respecting EXIF orientation.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images all become 3-channel uint8.
    """
    with open_image(path) as img:  # refuses an image above PIL's decompression-bomb limit
        img.load()
        return _to_rgb(img)


def image_files(folder: Path, skipped: dict[str, str] | None = None) -> list[Path]:
    """Image files under `folder`, nested subfolders included, sorted (`file_policy`).

    What the policy leaves out is added to `skipped` ({path: reason}) when it is given.
    """
    files, left_out = scan_images(folder)
    if skipped is not None:
        skipped.update(left_out)
    return files


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, held as surrogate escapes
        return False
    return True


def _class_dirs(folder: Path, skipped: dict[str, str] | None) -> list[Path]:
    dirs = []
    for p in sorted(folder.iterdir()):
        if not p.is_dir():
            continue
        why = ignored_folder(p.name)
        if why is None:
            dirs.append(p)
        elif skipped is not None:
            skipped[str(p)] = why
    return dirs


def read_split(
    folder: Path,
    class_names: Sequence[str] | None,
    min_classes: int = 2,
    skipped: dict[str, str] | None = None,
) -> tuple[list[str], list[Sample]]:
    """Class names and samples of one folder of class folders.

    With `class_names` (the training split's), the folder's classes must be among them (a
    class without a folder: see `classes_without_images`). Without, the folder's class folders
    are the classes (at least `min_classes`). What the file policy leaves out goes into
    `skipped` ({path: reason}) when it is given.
    """
    dirs = _class_dirs(folder, skipped)
    if not dirs:
        loose = [p.name for p in folder.iterdir() if has_image_extension(p) and p.is_file()][:3]
        hint = f" It holds images directly ({', '.join(loose)}, ...)." if loose else ""
        raise DataError(
            f"{folder} has no class folders.{hint} Put each class's images in its own subfolder "
            f"({folder}/<class_name>/*.jpg); the subfolder names are the labels."
        )
    names = [d.name for d in dirs]
    for name in names:
        if not _is_utf8(name):
            raise DataError(
                f"Class folder {os.fsencode(folder / name)!r} has a name that is not valid UTF-8; "
                "the folder names become the class labels (checkpoint, plots, TensorBoard, "
                "reports). Rename it, e.g. with `convmv -f latin1 -t utf8 --notest`."
            )
    if class_names is None:
        class_names = names
        if len(names) < min_classes:
            raise DataError(
                f"{folder} has only one class folder ({names[0]}); a classifier needs at least "
                f"two. Add a folder per class under {folder}."
            )
    else:
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            train_dir = folder.parent / "train"
            raise DataError(
                f"{folder} has class folder(s) {unknown} that {train_dir} does not have. "
                f"Add training images for them under {train_dir}/<class>/, or remove them "
                f"from {folder}."
            )
    samples: list[Sample] = []
    for d in dirs:
        files = image_files(d, skipped)
        if not files:
            raise DataError(
                f"Class folder {d} contains no images ({', '.join(IMG_EXTENSIONS)}). "
                "Add images to it or remove the folder."
            )
        label = class_names.index(d.name)
        samples += [(str(f), label) for f in files]
    return list(class_names), samples


def classes_without_images(class_names: Sequence[str], samples: Sequence[Sample]) -> list[str]:
    """The classes that have no sample in `samples` (a split): macro averages leave them out."""
    present = {y for _, y in samples}
    return [c for i, c in enumerate(class_names) if i not in present]


def warn_classes_without_images(split: str, missing: Sequence[str]) -> None:
    """Name the classes a split has no images of (they are not evaluated in it)."""
    if missing:
        log.warning(
            "The %s split has no images of class(es) %s: they are not evaluated in it, and its "
            "macro averages leave them out (a split cut off by a fraction holds out an image of "
            "a class only when the class has at least 2)",
            split,
            list(missing),
        )


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


def _split_folder(root: Path, split: str) -> Path | None:
    found = [root / name for name in SPLIT_FOLDERS[split] if (root / name).is_dir()]
    if len(found) > 1:
        raise DataError(
            f"{root} has several {split} folders {[p.name for p in found]}; keep one of them."
        )
    return found[0] if found else None


def discover(
    root: str | os.PathLike,
    val_fraction: float = 0.15,
    test_fraction: float = 0.0,
    seed: int = 0,
    min_classes: int = 2,
    skipped: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, list[Sample]]]:
    """Find classes and samples of every split.

    `min_classes` is 2 for training; evaluating a trained model may use a folder of fewer.
    `skipped` ({path: reason}), when given, receives what the file policy left out
    (`thawkit.data.file_policy`).

    Layouts: `root/{train,val[,test]}/<class>/...` (also `valid/`, `validation/`), or
    `root/<class>/...` split by stratified fractions (val_fraction, test_fraction). A `train/`
    without `val/` (or `test/`) is split the same way.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root={root} is not a folder. Point data.root at your image folder.")
    if not 0 <= test_fraction < 1:
        raise DataError(f"data.test_fraction={test_fraction} must be in [0, 1)")
    splits: dict[str, list[Sample]] = {}
    train_dir = _split_folder(root, "train")
    if train_dir is not None:
        class_names, splits["train"] = read_split(train_dir, None, min_classes, skipped)
        for split in ("val", "test"):
            folder = _split_folder(root, split)
            if folder is not None:
                _, splits[split] = read_split(folder, class_names, skipped=skipped)
    else:
        stray = [_split_folder(root, s) for s in ("val", "test")]
        if any(stray):
            raise DataError(
                f"{root} has {[p.name for p in stray if p]} but no train/ folder. Put the "
                f"training images in {root}/train/<class>/."
            )
        class_names, splits["train"] = read_split(root, None, min_classes, skipped)
    if "test" not in splits and test_fraction > 0:
        splits["train"], splits["test"] = _stratified_split(splits["train"], test_fraction, seed)
    if "val" not in splits:
        if not 0 < val_fraction < 1:
            raise DataError(
                f"{root} has no val/ folder and data.val_fraction={val_fraction}; set a fraction "
                "in (0, 1) or add a val/ folder."
            )
        # val_fraction is of the whole folder, also when a test fraction came off it first.
        frac = val_fraction / (1 - test_fraction) if test_fraction else val_fraction
        splits["train"], splits["val"] = _stratified_split(splits["train"], frac, seed + 1)
    return class_names, splits


def image_problem(path: str) -> str | None:
    """Why `path` cannot be trained on (zero bytes, unreadable, truncated), or None if it can.

    Reads the header and decodes every byte of the image data once; JPEGs decode at reduced
    scale (the same bytes are read, so truncation and corruption are still found).
    """
    try:
        if os.path.getsize(path) == 0:
            return "zero-byte file"
        with open_image(path) as img:  # an image too large is refused by its header
            img.draft(None, (_CHECK_DRAFT_SIZE, _CHECK_DRAFT_SIZE))  # no-op for non-JPEG
            img.load()
            _to_rgb(img)
    except Exception as e:  # PIL raises many types for broken files
        return f"{type(e).__name__}: {e}"
    return None


def decode_workers() -> int:
    """Threads that decode files at once: two per core this process may use, at most 8.

    Threads, not processes: PIL releases the GIL inside its decoders and its resize, which take
    76-80% of a decode (profiled on the shared photos, docs/benchmarks.md), so threads use the
    cores without a process pool's start-up and its copying of every image back; two per core
    also overlap the file reads with the decoding.
    """
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (containers)
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, 2 * cores))


@contextmanager
def ordered_map(workers: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """A `map` over a pool of `workers` threads (results in input order); `workers=1`: the
    plain serial `map`, the path every parallel result must equal."""
    if workers <= 1:
        yield map
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield pool.map


def find_bad_images(paths: Sequence[str], workers: int | None = None) -> dict[str, str]:
    """Check every file once, in threads (`decode_workers`; 1 = serially).

    Returns:
        {path: problem} for the files that cannot be used, in the order of `paths`.
    """
    with ordered_map(workers or decode_workers()) as parallel_map:
        checked = parallel_map(image_problem, paths)
        # A progress bar only where a person watches and the scan takes noticeable time.
        show = len(paths) >= 2000 and sys.stderr.isatty()
        problems = list(
            track(
                checked,
                total=len(paths),
                description="Checking images",
                disable=not show,
                transient=True,
            )
        )
    return {p: why for p, why in zip(paths, problems, strict=True) if why}


def drop_bad_images(
    root: str,
    splits: dict[str, list[Sample]],
    bad: dict[str, str],
    class_names: Sequence[str],
    on_bad_image: str,
) -> dict[str, list[Sample]]:
    """`splits` without the `bad` files (`find_bad_images`), by the `on_bad_image` policy.

    `error` fails listing every bad file; `skip` warns for each and drops it. Either way a
    split left empty, or a class left without training images, fails with the fix.
    """
    if bad and on_bad_image == "error":
        listing = "\n".join(f"  {p}: {why}" for p, why in bad.items())
        raise DataError(
            f"{len(bad)} unreadable image(s) under {root}:\n{listing}\n"
            "Fix or remove them, or set data.on_bad_image=skip to train without them."
        )
    for p, why in bad.items():
        log.warning("Skipping unreadable image %s (%s)", p, why)
    splits = {k: [s for s in v if s[0] not in bad] for k, v in splits.items()}
    for split, samples in splits.items():
        if not samples:
            raise DataError(
                f"Every image of the {split} split under {root} is unreadable. "
                "Replace the files listed above."
            )
    present = {y for _, y in splits["train"]}
    missing = [c for i, c in enumerate(class_names) if i not in present]
    if missing:
        raise DataError(
            f"After skipping unreadable files, the training split under {root} has no "
            f"images of class(es) {missing}. Add readable images for them."
        )
    return splits
