"""The bad-image scan with a memory: files unchanged since an earlier run are not decoded again.

`thawkit.data.folder.find_bad_images` decodes every file once per run. With the persistent cache
(`thawkit.data.disk_cache`) its verdicts are kept per image folder, a row per file keyed by the
file's identity (path, size, modification time): a later run checks only the files that are new
or changed, and reuses every other verdict.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from thawkit.data import folder
from thawkit.data.disk_cache import DiskCache, digest, file_identity

# Part of the key: a change to what the check finds (thawkit.data.folder.image_problem) bumps it.
_CHECK_VERSION = "image_problem-1"


def _load(disk: DiskCache, key: str) -> dict[str, str | None]:
    payload = disk.read("scan", key)
    if payload is None:
        return {}
    try:
        rows = json.loads(payload.decode("utf-8", "surrogateescape"))["rows"]
        if not isinstance(rows, dict):
            raise TypeError(f"rows is a {type(rows).__name__}")
    except (ValueError, KeyError, TypeError) as e:
        disk.corrupt("scan", key, f"unreadable scan results: {e}")
        return {}
    return rows


def find_bad_images(
    paths: Sequence[str], root: str, disk: DiskCache | None, workers: int | None = None
) -> tuple[dict[str, str], int]:
    """`folder.find_bad_images` (in `workers` threads), reusing the verdicts on unchanged files.

    Returns:
        {path: problem} for the files that cannot be used (in the order of `paths`), and the
        number of files checked (decoded) now; the others were unchanged since an earlier scan.
    """
    if disk is None:
        return folder.find_bad_images(paths, workers), len(paths)
    key = digest("scan", os.path.abspath(root), _CHECK_VERSION)
    known = _load(disk, key)
    ids = {}
    for p in paths:
        try:
            ids[p] = file_identity(p)
        except OSError:  # vanished since the listing: the check says why
            ids[p] = None
    todo = [p for p in paths if ids[p] is None or ids[p] not in known]
    checked = set(todo)
    found = folder.find_bad_images(todo, workers) if todo else {}
    rows = {ids[p]: known[ids[p]] for p in paths if ids[p] is not None and ids[p] in known}
    rows.update({ids[p]: found.get(p) for p in todo if ids[p] is not None})
    if todo:
        disk.write("scan", key, json.dumps({"rows": rows}, ensure_ascii=True).encode())
    verdicts = ((p, found.get(p) if p in checked else known[ids[p]]) for p in paths)
    return {p: why for p, why in verdicts if why}, len(todo)
