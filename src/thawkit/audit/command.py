"""The data audit: `python audit.py data.root=FOLDER` (or `thawkit audit ...`).

One frozen forward pass over every split (`thawkit.audit.features`), then, from the features and
the files alone: leakage between splits, exact and near duplicates, outliers and unusable images
(`thawkit.audit.findings`), and likely label errors (`thawkit.audit.label_issues`). Writes
`audit.json`, `audit.md` and one gallery PNG per finding kind into the run dir
(`thawkit.audit.report`, `thawkit.audit.gallery`); docs/audit.md says how to read them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from thawkit.audit import findings
from thawkit.audit.features import measure
from thawkit.audit.gallery import write_galleries
from thawkit.audit.label_issues import label_issues
from thawkit.audit.report import KINDS, write_json, write_markdown
from thawkit.config.schema import BY_TARGET, AuditSchema, problems
from thawkit.console import quiet_loggers
from thawkit.data import folder
from thawkit.data.file_policy import log_skipped
from thawkit.models.backbone import build_backbone
from thawkit.textio import bytes_safe_streams

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """`auto` = the first CUDA GPU if there is one, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def audit(cfg: DictConfig, out: str | os.PathLike) -> dict[str, Any]:
    """Audit `cfg.data.root` (an audit.yaml config) and write the results into `out`.

    Returns:
        The record written to `audit.json`, with `files` (what was written) added.

    Raises:
        FileExistsError: `out` holds an earlier audit (an audit never overwrites one).
        thawkit.data.folder.DataError: the folder cannot be read as an image folder.
    """
    start = time.perf_counter()
    found = problems(cfg, AuditSchema, BY_TARGET)
    if found:
        raise ValueError("Invalid audit config:\n  " + "\n  ".join(found))
    out = Path(out)
    if (out / "audit.json").exists():
        raise FileExistsError(
            f"{out} already holds an audit (audit.json); an audit never overwrites one. Leave "
            "hydra.run.dir at its default (a new dir each time) or pass another."
        )
    ignored: dict[str, str] = {}
    # Absolute paths in audit.json: `data.exclude=audit.json` matches them from any folder.
    root = os.path.abspath(os.path.expanduser(cfg.data.root))
    class_names, splits = folder.discover(
        root,
        cfg.data.val_fraction,
        cfg.data.test_fraction,
        cfg.data.seed,
        skipped=ignored,
    )
    log_skipped(ignored)
    ordered = sorted(splits, key=lambda s: findings.SPLIT_ORDER.index(s))
    samples = [s for split in ordered for s in splits[split]]
    split_of = [split for split in ordered for _ in splits[split]]
    paths = [p for p, _ in samples]
    label_ids = np.array([y for _, y in samples])
    labels = [class_names[y] for y in label_ids]
    device = resolve_device(cfg.device)
    with quiet_loggers("thawkit.models.weights"):
        backbone = build_backbone(cfg.model.backbone, cfg.model.weights)
    image_size = int(cfg.data.image_size or backbone.preprocessing.input_size)
    m = measure(
        samples,
        backbone,
        image_size,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        device=device,
        feature_cache_dir=cfg.feature_cache_dir,
        weights=str(cfg.model.weights),
        progress=cfg.progress,
    )
    analysis_start = time.perf_counter()
    valid = np.array([not e for e in m.errors])
    # Pooled features of a pretrained ReLU network are all positive, so unrelated images have
    # a high raw cosine similarity; about the folder's mean feature they spread out
    # (docs/audit.md measures both).
    unit = findings.normalised(m.features - m.features[valid].mean(axis=0))
    leak_exact, dups = findings.exact_duplicates(paths, split_of, labels, m.hashes)
    pairs, knn, nearest = findings.neighbours(
        unit, cfg.near_duplicate_threshold, cfg.outlier_neighbours, valid
    )
    leak_near, near = findings.near_duplicates(pairs, paths, split_of, labels, m.hashes)
    good = np.flatnonzero(valid)
    issues, _ = label_issues(
        unit[good],
        label_ids[good],
        [paths[i] for i in good],
        [split_of[i] for i in good],
        class_names,
        cfg.folds,
        cfg.data.seed,
    )
    record: dict[str, Any] = {
        "data_root": root,
        "backbone": cfg.model.backbone,
        "weights": str(cfg.model.weights),
        "image_size": image_size,
        "class_names": class_names,
        "num_images": len(samples),
        "splits": {s: len(splits[s]) for s in ordered},
        "settings": {
            k: cfg[k]
            for k in (
                "near_duplicate_threshold",
                "folds",
                "outlier_z",
                "outlier_neighbours",
                "min_side",
                "max_aspect",
                "min_contrast",
            )
        },  # fmt: skip
        "counts": {},
        # Each image's highest similarity to another: where the threshold sits in this folder.
        "nearest_similarity": {
            q: round(float(np.nanpercentile(nearest, p)), 4) if valid.sum() > 1 else None
            for q, p in (("median", 50), ("p99", 99), ("max", 100))
        },
        "skipped_files": ignored,
        "leakage": leak_exact + leak_near,
        "duplicates": dups,
        "near_duplicates": near,
        "label_issues": issues,
        "outliers": findings.outliers(
            knn, unit, label_ids, paths, split_of, class_names, cfg.outlier_z
        ),
        "unusable": findings.unusable(
            paths,
            split_of,
            labels,
            m.sizes,
            m.contrast,
            m.errors,
            cfg.min_side,
            cfg.max_aspect,
            cfg.min_contrast,
        ),  # fmt: skip
    }
    record["counts"] = {k: len(record[k]) for k in KINDS}
    analysis_s = time.perf_counter() - analysis_start
    out.mkdir(parents=True, exist_ok=True)
    galleries = write_galleries({k: record[k] for k in KINDS}, out, cfg.gallery)
    record["time_s"] = {
        "forward": round(m.forward_s, 3),
        "analysis": round(analysis_s, 3),
        "total": round(time.perf_counter() - start, 3),
    }
    record["galleries"] = {k: p.name for k, p in galleries.items()}
    write_json(out / "audit.json", record)
    write_markdown(out / "audit.md", record, galleries)
    files = {"audit": out / "audit.json", "summary": out / "audit.md", **galleries}
    return {**record, "files": {k: str(v) for k, v in files.items()}}


def main(cfg: DictConfig) -> dict[str, Any]:
    """The `audit.py` entry (conf/audit.yaml): audit the folder, print the counts."""
    bytes_safe_streams()
    out = HydraConfig.get().runtime.output_dir
    record = audit(cfg, out)
    print(f"Audit of {record['data_root']}: {record['num_images']} images")
    for kind in KINDS:
        print(f"  {kind:<16} {record['counts'][kind]}")
    print(f"Written to {out}: audit.json, audit.md, {len(record['galleries'])} galleries")
    return record
