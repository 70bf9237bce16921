"""benchmarks/reference_table.py: the floor, both plain loops and thawkit, and the two targets."""

from __future__ import annotations

from conftest import benchmark_module


def _module():
    return benchmark_module("reference_table")


FLOOR = {
    "process_wall_s": 20.0, "wall_s": 15.0, "forward_images_per_s": 70.0, "decode_s": 4.0,
    "images": 397, "batch_size": 64, "peak_rss_mb": 900.0,
}  # fmt: skip


def _run(process_wall_s: float, val_acc: float) -> dict:
    return {"process_wall_s": process_wall_s, "wall_s": process_wall_s - 5, "val_acc": val_acc,
            "peak_rss_mb": 1000.0}  # fmt: skip


def _stats(fe_thawkit: float, tp_thawkit: float, tp_acc: float) -> dict:
    loops = {"reference": _run(60, 0.8), "reference, workers matched": _run(50, 0.8)}
    return {
        "feature_extraction": {**loops, "thawkit": _run(fe_thawkit, 0.9)},
        "two_phase": {**loops, "thawkit": _run(tp_thawkit, tp_acc)},
    }


def test_both_targets_met_side_by_side() -> None:
    lines = _module().reference_section([FLOOR], _stats(21.0, 30.0, 0.85), 1)
    text = "\n".join(lines)
    assert "floor: 397 images" in text and "num_workers=4" in text and "num_workers=1" in text
    assert sum(line.startswith("| thawkit |") for line in lines) == 2
    targets = [line for line in lines if line.startswith("- thawkit")]
    assert len(targets) == 2 and all(line.endswith("**met**") for line in targets)


def test_targets_not_met_when_slower_or_less_accurate() -> None:
    lines = _module().reference_section([FLOOR], _stats(23.0, 30.0, 0.7), 1)
    targets = [line for line in lines if line.startswith("- thawkit")]
    assert len(targets) == 2 and all(line.endswith("**NOT met**") for line in targets)


def test_no_floor_run_no_section() -> None:
    assert _module().reference_section([], _stats(21.0, 30.0, 0.85), 1) == []
