"""benchmarks/auto_evidence.py: the comparison behind auto's evidence table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

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


def _summary(folder: Path, strategy: str, seed: int, acc: float) -> None:
    run = folder / "sweep" / f"{strategy}-{seed}-{acc}"
    run.mkdir(parents=True)
    summary = {"strategy": strategy, "seed": seed, "status": "finished", "best": {"val/acc": acc}}
    (run / "summary.json").write_text(json.dumps(summary))


def test_only_missing_strategy_seed_pairs_run_and_a_pair_counts_once(
    tmp_path: Path, monkeypatch
) -> None:
    module = benchmark_module("auto_evidence")
    _summary(tmp_path, "full", 0, 0.5)
    _summary(tmp_path, "full", 1, 0.7)
    _summary(tmp_path, "gradual", 0, 0.6)
    _summary(tmp_path, "gradual", 0, 0.9)  # a second copy of the same run
    calls = []
    monkeypatch.setattr(
        module,
        "run_sweep",
        lambda data, out, todo, args, epochs, seeds: calls.append((todo, seeds)),
    )
    args = argparse.Namespace(seeds=[0, 1], report_only=False, keep_checkpoints=False)
    rows = module.ensure(tmp_path, tmp_path, ["full", "gradual", "partial"], args, 5)
    assert sorted(calls) == [(["gradual"], [1]), (["partial"], [0, 1])]
    assert sorted((r["strategy"], r["seed"]) for r in rows) == [
        ("full", 0),
        ("full", 1),
        ("gradual", 0),
    ]


def _sweep_with_checkpoints(data, out, todo, args, epochs, seeds) -> None:
    """A sweep that leaves one completed and one interrupted run, each with checkpoints."""
    for job, status in enumerate(("completed", "interrupted")):
        run = out / str(job)
        (run / "checkpoints").mkdir(parents=True)
        for name in ("best.ckpt", "last.ckpt"):
            (run / "checkpoints" / name).write_bytes(b"x" * 1000)
        summary = {"strategy": todo[0], "seed": seeds[0], "status": status}
        (run / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize("keep", [False, True])
def test_completed_runs_lose_their_checkpoints_unless_kept(
    tmp_path: Path, monkeypatch, keep: bool
) -> None:
    module = benchmark_module("auto_evidence")
    monkeypatch.setattr(module, "run_sweep", _sweep_with_checkpoints)
    args = argparse.Namespace(seeds=[0], report_only=False, keep_checkpoints=keep)
    module.ensure(tmp_path, tmp_path, ["full"], args, 5)
    completed = sorted(tmp_path.glob("*/0/checkpoints/*.ckpt"))
    interrupted = sorted(tmp_path.glob("*/1/checkpoints/*.ckpt"))
    assert len(completed) == (2 if keep else 0)
    assert len(interrupted) == 2  # kept to resume from
