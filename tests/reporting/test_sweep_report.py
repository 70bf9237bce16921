"""The sweep report on folders of runs written here by hand: rows, groups, failures, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from thawkit.reporting import sweep_report as report
from thawkit.reporting import sweep_runs
from thawkit.run.job import job_dirname


def make_run(
    root: Path,
    name: str,
    overrides: list[str],
    value: float | None = None,
    status: str | None = "completed",
    metric: str = "val/acc",
    train_time: float = 10.0,
    diagnosis: str = "good fit: numbers",
) -> Path:
    """A run dir as a job leaves it: .hydra/, and summary.json + result.json when it got there."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
    factors = dict(o.split("=", 1) for o in overrides)
    mode = "min" if "loss" in metric else "max"
    config = {
        "optimized_metric": metric,
        "seed": int(factors.get("seed", 0)),
        "strategy": {"name": factors.get("strategy", "two_phase")},
        "model": {"backbone": "tf_efficientnet_lite0"},
        "callbacks": {"model_checkpoint": {"mode": mode}},
    }
    OmegaConf.save(OmegaConf.create(config), run / ".hydra" / "config.yaml")
    if status == "completed":
        summary = {
            "strategy": config["strategy"]["name"],
            "backbone": "tf_efficientnet_lite0",
            "seed": config["seed"],
            "best": {"epoch": 3, metric: value},
            "test": {"test/acc": value - 0.01},
            "history": [{}] * 4,
            "train_time_s": train_time,
            "images_per_s": 50.0,
            "diagnosis": diagnosis,
        }
        (run / "summary.json").write_text(json.dumps(summary))
    if status is not None:
        result = {
            "status": status,
            "optimized_metric": metric,
            "mode": mode,
            "value": value,
            "error": "ValueError: boom" if status == "failed" else None,
        }
        (run / "result.json").write_text(json.dumps(result))
    (run / "checkpoints").mkdir()
    return run


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    values = {("full", 0): 0.90, ("full", 1): 0.80, ("gradual", 0): 0.95, ("gradual", 1): 0.93}
    for i, ((strategy, seed), value) in enumerate(values.items()):
        overrides = [f"strategy={strategy}", f"seed={seed}", "data.root=/data"]
        diagnosis = "overfitting: gap" if strategy == "full" and seed else "good fit: numbers"
        make_run(
            root, f"{i}_seed={seed},strategy={strategy}", overrides, value, diagnosis=diagnosis
        )
    make_run(
        root,
        "4_seed=0,strategy=scratch",
        ["strategy=scratch", "seed=0", "data.root=/data"],
        status="failed",
    )
    make_run(
        root,
        "10_seed=1,strategy=scratch",
        ["strategy=scratch", "seed=1", "data.root=/data"],
        status=None,
    )
    OmegaConf.save(OmegaConf.create({"hydra": {}}), root / "multirun.yaml")
    return root


def test_one_csv_row_per_run_failed_ones_included(sweep: Path) -> None:
    written = report.write_report(sweep)
    assert set(written) == {"csv", "md", "png"}
    with written["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert [r["job"].split("_")[0] for r in rows] == ["0", "1", "2", "3", "4", "10"]  # job order
    assert [r["status"] for r in rows] == ["completed"] * 4 + ["failed", "failed"]
    assert (
        rows[0]["value"] == "0.9" and rows[0]["test/acc"] == "0.89" and rows[0]["best/epoch"] == "3"
    )
    assert rows[4]["error"] == "ValueError: boom" and rows[4]["strategy"] == "scratch"
    assert rows[5]["error"] == sweep_runs.NO_RECORD  # killed: only .hydra/ is there
    assert "data.root" not in rows[0]  # constant across the sweep: not a factor column
    assert (
        rows[1]["verdict"] == "overfitting"
        and rows[1]["overrides"] == "strategy=full seed=1 data.root=/data"
    )


def test_markdown_groups_seeds_and_sorts_by_the_metric(sweep: Path) -> None:
    md = report.markdown(report.collect(sweep), "multirun")
    grouped = md.split("## Failed runs")[0]
    table = [
        line
        for line in grouped.splitlines()
        if line.startswith("| ") and not line.startswith("| strategy")
    ]
    assert [line.split(" | ")[0] for line in table] == ["| gradual", "| full", "| scratch"]
    assert "| gradual | 2 | 0.9400 ± 0.0141 | 0.9300 ± 0.0141 | 10.0 ± 0.0 | good fit x2 |" in md
    assert "| full | 2 | 0.8500 ± 0.0707 |" in md and "good fit, overfitting" in md
    assert "| scratch | 0/2 (2 failed) | - |" in md
    assert "6 runs: 4 completed, 2 failed" in md
    assert "Best run: val/acc = 0.9500 (strategy=gradual, seed=0)" in md
    failed = md.split("## Failed runs")[1]
    assert "ValueError: boom" in failed and sweep_runs.NO_RECORD in failed


def test_a_loss_metric_sorts_ascending(tmp_path: Path) -> None:
    for i, (strategy, loss) in enumerate([("full", 0.4), ("gradual", 0.2), ("partial", 0.3)]):
        make_run(
            tmp_path, f"{i}_strategy={strategy}", [f"strategy={strategy}"], loss, metric="val/loss"
        )
    rows = report.collect(tmp_path)
    _, groups = report.group_rows(rows)
    assert [g["key"] for g in groups] == [("gradual",), ("partial",), ("full",)]


def test_optuna_best_trial_is_reported(sweep: Path) -> None:
    best = {"name": "optuna", "best_params": {"model.lr": 0.003}, "best_value": 0.95}
    OmegaConf.save(OmegaConf.create(best), sweep / "optimization_results.yaml")
    md = report.write_report(sweep)["md"].read_text()
    assert "Optuna best trial: val/acc = 0.95 with" in md and "- `model.lr=0.003`" in md


def test_single_run_and_nested_outputs(tmp_path: Path) -> None:
    run = make_run(tmp_path / "outputs" / "2026-01-01", "12-00-00-full", ["strategy=full"], 0.7)
    (run / "tensorboard" / "inner").mkdir(parents=True)
    (run / "tensorboard" / "inner" / "summary.json").write_text("{}")  # never a run
    assert sweep_runs.find_runs(tmp_path / "outputs") == [run]
    assert sweep_runs.find_runs(run) == [run]
    rows = report.collect(run)
    assert len(rows) == 1 and rows[0]["job"] == run.name and rows[0]["value"] == 0.7


def test_cli_writes_and_prints_the_report(sweep: Path, capsys) -> None:
    report.main([str(sweep)])
    out = capsys.readouterr().out
    assert (
        out.startswith("# Sweep summary: multirun")
        and f"wrote {sweep / 'sweep_summary.csv'}" in out
    )
    assert (sweep / "sweep_summary.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        report.main([str(sweep / "missing")])
    assert "is not a folder of runs" in capsys.readouterr().err


def test_job_dirnames_fit_a_file_name() -> None:
    assert job_dirname("seed=1,strategy=full") == "seed=1,strategy=full"
    assert (
        job_dirname("model.lr=0.00123456789,model.head.dropout=0.3")
        == "model.lr=0.001235,model.head.dropout=0.3"
    )
    assert job_dirname("model.weights=/a/b.pth") == "model.weights=-a-b.pth"
    assert len(job_dirname(",".join(f"key{i}=value{i}" for i in range(50)))) == 200


def test_auto_runs_show_the_strategy_auto_picked(tmp_path: Path) -> None:
    run = make_run(tmp_path, "0_strategy=auto", ["strategy=auto"], 0.8)
    summary = json.loads((run / "summary.json").read_text())
    summary["auto"] = {"chosen": "two_phase", "reasons": ["near domain"]}
    (run / "summary.json").write_text(json.dumps(summary))
    other = make_run(tmp_path, "1_strategy=full", ["strategy=full"], 0.7)
    rows = {r["job"]: r for r in report.collect(tmp_path)}
    assert rows[run.name]["strategy"] == "auto (two_phase)"
    assert rows[other.name]["strategy"] == "full"


def test_a_run_that_failed_during_setup_is_a_failed_row(tmp_path: Path) -> None:
    run = tmp_path / "0_strategy=full"
    run.mkdir()
    failed = {"status": "failed", "error": "DataError: x", "stage": "setup"}
    (run / "summary.json").write_text(json.dumps(failed))
    [row] = [sweep_runs.read_run(r, tmp_path) for r in sweep_runs.find_runs(tmp_path)]
    assert row["status"] == "failed"
