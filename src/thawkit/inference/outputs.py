"""Where predict and evaluate write: never over an earlier result.

A default name that is taken gets a number (`predictions/ants.csv`, then `ants-2.csv`;
`eval/base-val/`, then `eval/base-val-2/`), as a training run never reuses a run dir. A name the
user gave (`output=`, `output_dir=`) that is taken is refused unless `overwrite=true`.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _taken(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir())) or path.is_symlink()


def fresh_path(path: Path, folder: bool = False) -> Path:
    """`path`, or the first of `<stem>-2<suffix>`, `<stem>-3<suffix>`, ... that is not taken
    (a `folder` is numbered after its whole name)."""
    if not _taken(path):
        return path
    stem, suffix = (path.name, "") if folder else (path.stem, path.suffix)
    number = 2
    while _taken(candidate := path.with_name(f"{stem}-{number}{suffix}")):
        number += 1
    log.info("%s holds an earlier result: writing to %s", path, candidate)
    return candidate


def output_path(
    given: str | Path | None, default: Path, key: str, overwrite: bool, folder: bool = False
) -> Path:
    """The file or folder to write: `given` (refused when taken, unless `overwrite`), else a
    fresh variant of `default`.

    Raises:
        FileExistsError: `given` holds an earlier result and `overwrite` is false.
    """
    if given is None:
        return fresh_path(default, folder)
    path = Path(given).expanduser()
    if _taken(path) and not overwrite:
        raise FileExistsError(
            f"{key}={path} already holds an earlier result; a new result never overwrites "
            f"it. Pass overwrite=true to replace it, or another {key}=."
        )
    return path
