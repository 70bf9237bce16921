"""benchmarks/auto_evidence.py: the comparison behind auto's evidence table."""

from __future__ import annotations

import numpy as np

from conftest import benchmark_module


def _row(strategy: str, seed: int, acc: float, chosen: str | None = None, a=None) -> dict:
    return {"strategy": strategy, "seed": seed, "acc": acc, "chosen": chosen, "wiseft": a}


def _verdict(rows: list[dict]) -> tuple[str, str]:
    line = benchmark_module("auto_evidence").evidence("set", rows, 0.01)[0][0]
    cells = [c.strip() for c in line.strip("|").split("|")]
    return cells[-2], cells[-1]


def test_equal_accuracies_are_not_below_and_one_point_is_within() -> None:
    f32 = [float(np.float32(0.9)), float(np.float32(0.91))]  # a best checkpoint's val/acc
    rows = [
        _row("auto", 0, 0.9, "partial", 1.0), _row("auto", 1, 0.91, "partial", 1.0),  # rounded
        _row("full", 0, f32[1]), _row("full", 1, f32[0]),
        _row("gradual", 0, 0.91), _row("gradual", 1, 0.92),
    ]  # fmt: skip
    assert _verdict(rows) == ("-1.0", "yes / yes")


def test_a_miss_and_a_loss_to_the_default_are_reported() -> None:
    rows = [
        _row("auto", 0, 0.80, "gradual"), _row("auto", 1, 0.80, "gradual"),
        _row("full", 0, 0.82), _row("full", 1, 0.82),
        _row("partial", 0, 0.85), _row("partial", 1, 0.85),
    ]  # fmt: skip
    assert _verdict(rows) == ("-5.0", "no / no")
