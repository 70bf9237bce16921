"""The findings that need no model: duplicates, leakage, near-duplicates, outliers, unusable.

Pure functions of the measurements (`thawkit.audit.features.Measured`) and the samples. Every
finding is a plain dict, the entry `audit.json` holds: `files` (each with its path, split and
given label), `score`, `action` (what to do, in words) and `exclude` (the files that action
removes; what `data.exclude=audit.json` leaves out of training, `thawkit.data.exclude`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

# Splits from the least to the most precious: of a leaked image the copy in the latest split
# stays (the test split is the final judge and stays comparable across runs), the others go.
SPLIT_ORDER = ("train", "val", "test")
# Rows of the similarity matrix computed at a time: 1024 x N float32 stays small.
_BLOCK = 1024
# More pairs than this above the threshold means the threshold is far too low.
MAX_PAIRS = 20000
# Modified z-score (Iglewicz and Hoaglin): 0.6745 (x - median) / MAD follows a standard normal.
_MAD_SCALE = 0.6745

Entry = dict[str, Any]


def _file(path: str, split: str, label: str) -> dict[str, str]:
    return {"path": path, "split": split, "label": label}


def _rank(split: str) -> int:
    return SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER)


def normalised(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), so that a dot product is a cosine."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def exact_duplicates(
    paths: Sequence[str], splits: Sequence[str], labels: Sequence[str], hashes: Sequence[str]
) -> tuple[list[Entry], list[Entry]]:
    """(leakage, duplicates) of byte-identical files.

    A content hash in several splits is one leakage entry (the copies outside the latest split
    are excluded); in one split with several copies, one duplicates entry (all but the first
    are excluded).
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        groups[h].append(i)
    leakage, duplicates = [], []
    for members in groups.values():
        if len(members) < 2:
            continue
        files = [_file(paths[i], splits[i], labels[i]) for i in members]
        conflict = len({labels[i] for i in members}) > 1
        in_splits = sorted({splits[i] for i in members}, key=_rank)
        if len(in_splits) > 1:
            keep = in_splits[-1]
            leakage.append(
                {
                    "match": "exact",
                    "files": files,
                    "score": 1.0,
                    "action": f"remove the copies outside {keep}: the same file is in "
                    f"{' and '.join(in_splits)}" + (", under different labels" if conflict else ""),
                    "exclude": [f["path"] for f in files if f["split"] != keep],
                }
            )
        for split in in_splits:
            copies = [f for f in files if f["split"] == split]
            if len(copies) > 1:
                duplicates.append(
                    {
                        "files": copies,
                        "score": 1.0,
                        "action": "keep one, remove the others"
                        + (" (labelled differently: check the label)" if conflict else ""),
                        "exclude": [f["path"] for f in copies[1:]],
                    }
                )
    return leakage, duplicates


def neighbours(
    unit: np.ndarray, threshold: float, k: int, valid: np.ndarray
) -> tuple[list[tuple[int, int, float]], np.ndarray, np.ndarray]:
    """Pairs (i < j) with cosine similarity >= `threshold`, each row's mean similarity to its
    `k` nearest other rows, and its highest similarity to another row (NaN for invalid rows),
    from one blockwise pass over `unit`."""
    n = len(unit)
    pairs: list[tuple[int, int, float]] = []
    knn = np.full(n, np.nan)
    nearest = np.full(n, np.nan)
    k = max(1, min(k, int(valid.sum()) - 1))
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        sim = unit[start:stop] @ unit.T
        sim[:, ~valid] = -np.inf
        rows = np.arange(start, stop)
        sim[rows - start, rows] = -np.inf  # not its own neighbour
        if k < n:
            top = np.partition(sim, -k, axis=1)[:, -k:]
            knn[start:stop] = np.where(valid[start:stop], top.mean(axis=1), np.nan)
            nearest[start:stop] = np.where(valid[start:stop], top.max(axis=1), np.nan)
        hit_r, hit_c = np.nonzero(sim >= threshold)
        for r, c in zip(hit_r + start, hit_c, strict=True):
            if r < c and valid[r]:
                pairs.append((int(r), int(c), float(sim[r - start, c])))
        if len(pairs) > MAX_PAIRS:
            raise ValueError(
                f"More than {MAX_PAIRS} image pairs have a cosine similarity >= {threshold}: "
                "near_duplicate_threshold is too low for this folder. Raise it (the default "
                "and how it was chosen: docs/audit.md)."
            )
    return pairs, knn, nearest


def near_duplicates(
    pairs: Sequence[tuple[int, int, float]],
    paths: Sequence[str],
    splits: Sequence[str],
    labels: Sequence[str],
    hashes: Sequence[str],
) -> tuple[list[Entry], list[Entry]]:
    """(leakage, near_duplicates) of the similar pairs that are not byte-identical.

    Across splits, the copy in the earlier split is excluded; within one, the second file.
    Highest similarity first.
    """
    leakage, near = [], []
    for i, j, sim in sorted(pairs, key=lambda p: -p[2]):
        if hashes[i] == hashes[j]:
            continue  # an exact duplicate, reported as such
        a, b = sorted((i, j), key=lambda m: (_rank(splits[m]), m))
        files = [_file(paths[m], splits[m], labels[m]) for m in (a, b)]
        entry: Entry = {"files": files, "score": round(sim, 4)}
        relabel = labels[a] != labels[b]
        if splits[a] != splits[b]:
            entry["match"] = "near"
            entry["action"] = (
                f"look: the same scene in {splits[a]} and {splits[b]}; if it is, remove the "
                f"{splits[a]} copy" + (" (labelled differently)" if relabel else "")
            )
            entry["exclude"] = [paths[a]]
            leakage.append(entry)
        else:
            entry["action"] = "look: if the same image, keep one" + (
                " (labelled differently: check the label)" if relabel else ""
            )
            entry["exclude"] = [paths[b]]
            near.append(entry)
    return leakage, near


def outliers(
    knn_similarity: np.ndarray,
    unit: np.ndarray,
    label_ids: np.ndarray,
    paths: Sequence[str],
    splits: Sequence[str],
    class_names: Sequence[str],
    z_threshold: float,
) -> list[Entry]:
    """Images far from every class: their distance to their nearest neighbours (1 - mean
    cosine similarity) has a modified z-score above `z_threshold`. Farthest first.

    The nearest class (by cosine similarity to the class means) is the suggested label.
    """
    distance = 1.0 - knn_similarity
    ok = ~np.isnan(distance)
    if ok.sum() < 3:
        return []
    median = np.median(distance[ok])
    mad = np.median(np.abs(distance[ok] - median))
    if mad <= 0:
        return []
    z = _MAD_SCALE * (distance - median) / mad
    centroids = np.stack(
        [
            unit[label_ids == c].mean(axis=0) if (label_ids == c).any() else np.zeros(unit.shape[1])
            for c in range(len(class_names))
        ]
    )
    nearest = (unit @ normalised(centroids).T).argmax(axis=1)
    found = []
    for i in np.argsort(-np.nan_to_num(z, nan=-np.inf)):
        if not ok[i] or z[i] <= z_threshold:
            break
        found.append(
            {
                "files": [_file(paths[i], splits[i], class_names[label_ids[i]])],
                "score": round(float(z[i]), 3),
                "distance": round(float(distance[i]), 4),
                "suggested": class_names[nearest[i]],
                "action": "look: unlike the rest of the data (another kind of image, or a "
                "rare view worth more examples); remove it if it does not belong",
                "exclude": [],
            }
        )
    return found


def unusable(
    paths: Sequence[str],
    splits: Sequence[str],
    labels: Sequence[str],
    sizes: np.ndarray,
    contrast: np.ndarray,
    errors: Sequence[str],
    min_side: int,
    max_aspect: float,
    min_contrast: float,
) -> list[Entry]:
    """Images a model can learn little from: unreadable, tiny, extremely elongated, or nearly
    constant (pixel standard deviation of the model's input below `min_contrast`)."""
    found = []
    for i, path in enumerate(paths):
        w, h = (int(v) for v in sizes[i])
        reasons = []
        if errors[i]:
            reasons.append(f"unreadable ({errors[i]})")
        else:
            if min(w, h) < min_side:
                reasons.append(f"tiny ({w}x{h} px, under {min_side})")
            aspect = max(w, h) / max(1, min(w, h))
            if aspect > max_aspect:
                reasons.append(f"aspect ratio {aspect:.1f} (over {max_aspect:g})")
            if 0 <= contrast[i] < min_contrast:
                reasons.append(f"nearly constant (pixel std {contrast[i]:.3f})")
        if reasons:
            found.append(
                {
                    "files": [_file(path, splits[i], labels[i])],
                    "score": round(float(contrast[i]), 4),
                    "reasons": reasons,
                    "action": "remove: " + "; ".join(reasons),
                    "exclude": [path],
                }
            )
    return found
