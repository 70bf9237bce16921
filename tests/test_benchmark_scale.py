"""benchmarks/scale.py: the folders of hard-linked copies, the table and its two targets."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from conftest import write_image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module():
    sys.path.insert(0, str(BENCHMARKS))  # scale.py imports run.py beside it
    spec = importlib.util.spec_from_file_location("scale", BENCHMARKS / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(strategy: str, n: int, per_image_s: float, rss_mb: float, features_mb=1.0) -> dict:
    """A run whose set-up and epochs cost `per_image_s` per image, on top of a fixed 10 s."""
    setup = {
        "scan_s": 0.2 * per_image_s * n, "decode_s": 0.3 * per_image_s * n,
        "features_s": 0.1 * per_image_s * n,
        "extractions": [{"split": "train", "view": 0, "n": n, "s": 0.1 * per_image_s * n}],
        "image_cache_mb": n / 100, "features_mb": features_mb,
        "image_budget_mb": 1024.0, "feature_budget_mb": 512.0,
    }  # fmt: skip
    epochs_s = 0.4 * per_image_s * n
    return {
        "strategy": strategy, "train_size": n, "epochs": 2, "val_acc": 0.5,
        "wall_s": 10 + per_image_s * n, "train_time_s": epochs_s,
        "peak_rss_mb": rss_mb - 50, "process_peak_rss_mb": rss_mb, "setup": setup,
    }  # fmt: skip


def test_linear_cost_and_bounded_memory_are_met() -> None:
    records = [_record("full", n, 0.01 * (1 + i / 20), 1000 + 100 * i)
               for i, n in enumerate((400, 1600, 6400))]  # fmt: skip
    lines = _module().scale_table(records)
    rows = [line for line in lines if line.startswith("| 1,600 |")]
    assert len(rows) == 1 and "| 1100 |" in rows[0]  # the process tree's peak RSS
    targets = [line for line in lines if line.startswith("- full")]
    assert len(targets) == 3
    assert targets[0].endswith("**met**") and "+10%" in targets[0]  # set-up + epochs
    # The fixed 10 s weigh 2.5x as much per image at 400 images as at 1,600.
    assert targets[1].endswith("**NOT met**")
    assert targets[2].endswith("**met**") and "+200 MB" in targets[2]


def test_cost_growing_faster_than_the_folder_is_not_met() -> None:
    records = [_record("feature_extraction", n, 0.01 * n / 400, 1000) for n in (400, 1600)]
    targets = [line for line in _module().scale_table(records) if line.startswith("- feature")]
    assert targets[0].endswith("**NOT met**") and "+300%" in targets[0]


def test_memory_beyond_the_budgets_is_not_met() -> None:
    scale = _module()
    grows = [_record("full", 400, 0.01, 1000), _record("full", 1600, 0.01, 2700)]
    assert scale.scale_table(grows)[-2].endswith("**NOT met**")  # +1700 MB > 1024 + 512
    too_many_features = [_record("full", n, 0.01, 1000, features_mb=600) for n in (400, 1600)]
    assert scale.scale_table(too_many_features)[-2].endswith("**NOT met**")


def test_folders_are_hard_links_under_names_of_their_own(tmp_path: Path) -> None:
    scale = _module()
    data = tmp_path / "data"
    for source in scale.SOURCES:
        for split in ("train", "val"):
            for c in range(2):
                for i in range(2):
                    write_image(data / source / split / f"c{c}" / f"{i}.png", c, size=8, seed=i)
        (data / source / "README.md").write_text("not an image")
    out = scale.build_folder(data, tmp_path / "folder", 40)
    train = sorted((out / "train").rglob("*.png"))
    val = sorted((out / "val").rglob("*.png"))
    assert len(train) == 40 and len(val) == 10  # val is 20% of all
    assert len({p.name for p in train}) == 40  # distinct names, even for the same photo
    assert len({p.parent.name for p in train}) == 2 * len(scale.SOURCES)
    source = data / "hymenoptera" / "train" / "c0" / "0.png"
    copies = [p for p in train if os.path.samestat(p.stat(), source.stat())]
    # 16 training photos cycled through: the first is linked at 0, 16 and 32.
    assert len(copies) == 3 and source.stat().st_nlink == 1 + len(copies)
