"""Which files under an image folder are images, one policy for training, evaluate and predict.

- An image is a regular file (or a symlink to one) with an image extension (`IMG_EXTENSIONS`).
- Hidden folders (any name starting with `.`, such as `.thumbnails`) and the folders NAS boxes,
  operating systems and archivers keep (`IGNORED_FOLDERS`: `@eaDir`, `#recycle`, `__MACOSX`,
  ...) are never classes and never hold images of one: their files are left out.
- Dot-files are metadata, never images: macOS's AppleDouble `._photo.jpg`, `.DS_Store`.
- Files without an image extension (`labels.txt`, `notes.md`) are not images and not listed.
- An image above PIL's decompression-bomb warning size (`PIL.Image.MAX_IMAGE_PIXELS`, 89.5
  million pixels by default) is refused before it is decoded (`open_image`): the bad-image
  check (`thawkit.data.folder.image_problem`) skips it by name, or fails under
  `data.on_bad_image=error`.

Everything that looks like an image but is left out (an ignored folder, a dot-file with an image
extension, a dangling symlink) is returned with its reason by `scan_images`: the data module
records it in `summary.json["skipped_files"]` beside the unreadable files, evaluate in
`metrics.json`, and each is named in the log. docs/troubleshooting.md ("Which files count as
images") describes the policy for users.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif",
)  # fmt: skip
# Folders that tools keep beside the images: Synology (@eaDir, #recycle, #snapshot), QNAP
# (@Recycle, @Recently-Snapshot, .@__thumb), Windows ($RECYCLE.BIN, System Volume Information),
# macOS zip files (__MACOSX), fsck (lost+found). Dot-folders are ignored by their name alone.
IGNORED_FOLDERS = frozenset(
    {
        "@eaDir", "#recycle", "#snapshot", "@Recycle", "@Recently-Snapshot", "@tmp",
        "$RECYCLE.BIN", "System Volume Information", "__MACOSX", "lost+found",
    }
)  # fmt: skip


class ImageTooLarge(ValueError):
    """An image above PIL's decompression-bomb limit: refused before decoding."""


def ignored_folder(name: str) -> str | None:
    """Why a folder of this name holds no images of a class, or None if it may."""
    if name.startswith("."):
        return "hidden folder: its files are not images of a class"
    if name in IGNORED_FOLDERS:
        return f"{name} is a NAS/system folder: its files are not images of a class"
    return None


def has_image_extension(path: str | os.PathLike) -> bool:
    return os.path.splitext(path)[1].lower() in IMG_EXTENSIONS


def file_problem(path: Path) -> str | None:
    """Why a file with an image extension is not an image to use, or None if it is one."""
    if path.name.startswith("."):
        kind = "AppleDouble (macOS)" if path.name.startswith("._") else "hidden"
        return f"{kind} metadata file, not an image"
    if path.is_symlink() and not path.exists():
        return f"dangling symlink (its target {os.readlink(path)} does not exist)"
    if not path.is_file():
        return "not a regular file"
    return None


def scan_images(folder: Path) -> tuple[list[Path], dict[str, str]]:
    """Image files under `folder` (nested folders included, sorted), and what was left out.

    Returns:
        The images, and {path: reason} for each ignored folder and each file with an image
        extension that is not an image to use (see the module docstring). Symlinked folders
        are not followed (a link loop cannot recurse).
    """
    images: list[Path] = []
    skipped: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        for name in list(dirnames):
            why = ignored_folder(name)
            if why:
                dirnames.remove(name)
                skipped[str(here / name)] = why
        for name in filenames:
            path = here / name
            if not has_image_extension(name):
                continue
            why = file_problem(path)
            if why:
                skipped[str(path)] = why
            else:
                images.append(path)
    return sorted(images), dict(sorted(skipped.items()))


def log_skipped(skipped: Mapping[str, str]) -> None:
    """Name every left-out file in the log, with one warning that counts them by reason."""
    if not skipped:
        return
    for path, why in skipped.items():
        log.info("Ignoring %s (%s)", path, why)
    counts = Counter(why.split(":")[0].split(" (")[0] for why in skipped.values())
    listing = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
    log.warning(
        "Left out %d file(s)/folder(s) that are not images of a class (%s); each is named in "
        "the log and in skipped_files",
        len(skipped),
        listing,
    )


def open_image(path: str | os.PathLike) -> Image.Image:
    """`PIL.Image.open`, refusing an image above the decompression-bomb limit by name.

    PIL would warn without naming the file and decode it in full (or fail above twice the
    limit); the size is in the header, so nothing is decoded here.
    """
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(f"too large to decode safely: {e}") from None
    width, height = img.size
    if limit and width * height > limit:
        img.close()
        raise ImageTooLarge(
            f"too large to decode safely: {width} x {height} = {width * height} pixels, above "
            f"PIL's decompression-bomb limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    return img
