"""The audit's gallery PNGs: per finding kind, thumbnails with given label, suggestion and score.

Pairs (leakage, duplicates, near-duplicates) sit side by side in one row, so that a person
judges each pair at a glance; single images (label issues, outliers, unusable) fill the grid.
Drawn with the run plots' montage (`thawkit.reporting.plots.image_grid_figure`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from thawkit.audit.findings import Entry
from thawkit.data import folder
from thawkit.reporting.plots import image_grid_figure, save_png, short

log = logging.getLogger(__name__)

THUMBNAIL = 128  # pixels per cell
# Titles of each kind: what the gallery's heading says of its entries.
HEADINGS = {
    "leakage": "Leakage (same image, two splits)",
    "duplicates": "Exact duplicates",
    "near_duplicates": "Near-duplicates",
    "label_issues": "Likely label errors",
    "outliers": "Outliers",
    "unusable": "Unusable images",
}


def _thumbnail(path: str) -> np.ndarray:
    try:
        img = folder.load_rgb(path)
    except Exception:  # noqa: BLE001 - an unreadable image is shown as a grey tile
        return np.full((THUMBNAIL, THUMBNAIL, 3), 200, dtype=np.uint8)
    img.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _titles(kind: str, entry: Entry) -> list[str]:
    files = entry["files"]
    if kind == "label_issues":
        return [
            f"{short(entry['given'])} -> {short(entry['suggested'])}\np(given)={entry['score']:.2f}"
        ]
    if kind == "outliers":
        return [
            f"{short(files[0]['label'])} (near {short(entry['suggested'])})\nz={entry['score']:.1f}"
        ]
    if kind == "unusable":
        reason = entry["reasons"][0].split(" (")[0]
        return [f"{short(files[0]['label'])}\n{reason}"]
    score = f"{entry['score']:.3f}" if entry["score"] < 1 else "identical"
    return [f"{f['split']}/{short(f['label'])}\n{score}" for f in files[:2]]


def gallery_figure(kind: str, entries: Sequence[Entry], limit: int) -> Any:
    """The figure of the first `limit` entries of one kind."""
    shown = list(entries[:limit])
    pairs = kind in ("leakage", "duplicates", "near_duplicates")
    images, titles, colours = [], [], []
    for entry in shown:
        files = entry["files"][:2] if pairs else entry["files"][:1]
        images += [_thumbnail(f["path"]) for f in files]
        titles += _titles(kind, entry)
        flagged = kind == "label_issues" or len({f["label"] for f in files}) > 1
        colours += ["tab:red" if flagged else "black"] * len(files)
    more = f" (first {len(shown)} of {len(entries)})" if len(entries) > len(shown) else ""
    heading = f"{HEADINGS[kind]}: {len(entries)}{more}"
    cols = None
    if pairs:  # pairs side by side: an even number of columns
        cols = 2 * max(1, min(4, round(np.sqrt(len(shown)))))
    return image_grid_figure(images, titles, heading, THUMBNAIL, colours, cols=cols)


def write_galleries(findings: dict[str, list[Entry]], out: Path, limit: int) -> dict[str, Path]:
    """`gallery_<kind>.png` for every kind with findings; {kind: path}."""
    written: dict[str, Path] = {}
    if limit <= 0:
        return written
    for kind, entries in findings.items():
        if entries:
            written[kind] = save_png(
                gallery_figure(kind, entries, limit), out / f"gallery_{kind}.png"
            )
    return written
