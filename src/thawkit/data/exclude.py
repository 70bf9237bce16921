"""`data.exclude`: train without listed files, given as an audit's `audit.json` or a text file.

An `audit.json` (`thawkit audit`, docs/audit.md) lists, in each finding's `exclude`, the files
its suggested action removes; all of them are left out. A text file lists one path a line
(blank lines and lines starting with `#` skipped); a relative path is taken relative to
`data.root`. Paths are compared after resolving them (`os.path.realpath`), in every split. A
file that cannot be read, or a path that matches no image of the folder (a list made for
another folder, a file renamed since), is an error naming the fix: a silent no-op would train on
what the user meant to remove.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thawkit.data.folder import DataError, Sample
from thawkit.textio import ERRORS

log = logging.getLogger(__name__)

# Unmatched paths named in the error message (the rest are counted).
_SHOWN = 10


class ExcludeError(DataError):
    """`data.exclude` cannot be read or names files that are not in the folder."""


def _from_audit(record: Any, source: Path) -> list[str]:
    if isinstance(record, list) and all(isinstance(p, str) for p in record):
        return record
    if not isinstance(record, dict):
        raise ExcludeError(
            f"data.exclude={source} is JSON but neither an audit.json (thawkit audit) nor a "
            "list of paths. Pass an audit's audit.json, or a text file with one path a line."
        )
    paths: list[str] = []
    lists = [v for v in record.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
    for entries in lists:
        for entry in entries:
            paths += [str(p) for p in entry.get("exclude", [])]
    if not lists and "counts" not in record:
        raise ExcludeError(
            f"data.exclude={source} holds no finding lists (leakage, duplicates, ...): it is not "
            "an audit.json. Pass the audit.json of `thawkit audit data.root=...`, or a text file "
            "with one path a line."
        )
    return paths


def read_exclude(source: str | os.PathLike, root: str | os.PathLike) -> list[str]:
    """The paths listed in `source` (an audit.json or a text file), resolved.

    Raises:
        ExcludeError: `source` is missing, unreadable, or not an audit.json / list of paths.
    """
    source = Path(source).expanduser()
    if not source.is_file():
        raise ExcludeError(
            f"data.exclude={source} does not exist. Pass the audit.json of an audit "
            "(outputs/<date>/<time>-audit/audit.json) or a text file with one path a line."
        )
    try:
        text = source.read_text(encoding="utf-8", errors=ERRORS)
    except OSError as e:
        raise ExcludeError(
            f"data.exclude={source} cannot be read ({e}); check its permissions."
        ) from e
    if source.suffix == ".json":
        try:
            listed = _from_audit(json.loads(text), source)
        except json.JSONDecodeError as e:
            raise ExcludeError(
                f"data.exclude={source} is not valid JSON ({e}). Pass an audit's audit.json "
                "unchanged, or a text file (.txt) with one path a line."
            ) from e
    else:
        listed = [ln.strip() for ln in text.splitlines()]
        listed = [ln for ln in listed if ln and not ln.startswith("#")]
    base = Path(root).expanduser()
    return [os.path.realpath(p if os.path.isabs(p) else base / p) for p in listed]


def listed_files(
    splits: dict[str, list[Sample]], source: str | os.PathLike, root: str | os.PathLike
) -> set[str]:
    """The resolved paths `source` lists, each checked to be an image of `splits`.

    Raises:
        ExcludeError: the list cannot be read, or a listed path matches no image of `splits`.
    """
    wanted = set(read_exclude(source, root))
    by_path = {os.path.realpath(p) for samples in splits.values() for p, _ in samples}
    unmatched = sorted(wanted - by_path)
    if unmatched:
        shown = "\n".join(f"  {p}" for p in unmatched[:_SHOWN])
        more = f"\n  ... and {len(unmatched) - _SHOWN} more" if len(unmatched) > _SHOWN else ""
        raise ExcludeError(
            f"{len(unmatched)} path(s) of data.exclude={source} match no image under {root}:\n"
            f"{shown}{more}\nWas the list made for another folder, or were files moved since? "
            "Audit this folder again (thawkit audit data.root=...) or edit the list."
        )
    return wanted


def apply_exclude(
    splits: dict[str, list[Sample]],
    source: str | os.PathLike,
    root: str | os.PathLike,
    class_names: Sequence[str],
) -> tuple[dict[str, list[Sample]], dict[str, Any]]:
    """`splits` without the files `source` lists, and the record of what was left out
    (`summary.json["excluded_files"]`: source, count, files by split).

    Raises:
        ExcludeError: the list cannot be read, a listed path matches no image of `splits`, or
            a split (or a class of the training split) would be left without images.
    """
    wanted = listed_files(splits, source, root)
    kept: dict[str, list[Sample]] = {}
    left_out: dict[str, list[str]] = {}
    for split, samples in splits.items():
        kept[split] = [s for s in samples if os.path.realpath(s[0]) not in wanted]
        left_out[split] = [p for p, _ in samples if os.path.realpath(p) in wanted]
        if not kept[split]:
            raise ExcludeError(
                f"data.exclude={source} removes every image of the {split} split under {root}."
            )
    before = {y for _, y in splits["train"]}
    missing = before - {y for _, y in kept["train"]}
    if missing:
        raise ExcludeError(
            f"data.exclude={source} removes every training image of class(es) "
            f"{[class_names[y] for y in sorted(missing)]} under {root}; keep some, or remove "
            "the class folder."
        )
    count = sum(len(v) for v in left_out.values())
    log.info("data.exclude: %d file(s) left out (%s)", count, source)
    record = {
        "source": str(source),
        "count": count,
        "files": {k: v for k, v in left_out.items() if v},
    }
    return kept, record
