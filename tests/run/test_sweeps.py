"""Multiruns for real: the basic, joblib and submitit launchers, Optuna, and DDP jobs in a sweep.

Each test runs `train.py -m ...` with the tiny backbone on generated images and reads what the
sweep left on disk: one dir per job (named by its overrides), each job's records, the report.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import joblib
import pytest
from omegaconf import OmegaConf

from conftest import make_image_folder
from train_cli import TINY, run_train_here


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images", (12, 12), ("train", "val", "test"))


def sweep_args(sweep: Path, images: Path, *args: str) -> list[str]:
    # The sweep's own arguments last: they win over the tiny defaults.
    return ["-m", *TINY, f"data.root={images}", f"hydra.sweep.dir={sweep}", *args]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(
        (p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()),
        key=lambda p: int(p.name.split("_")[0]),
    )


def report_rows(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "sweep_summary.csv").open() as f:
        return list(csv.DictReader(f))


def result(job: Path) -> dict:
    return json.loads((job / "result.json").read_text())


def test_tiny_multirun_reports_one_row_per_job(tmp_path: Path, images: Path, monkeypatch) -> None:
    sweep = tmp_path / "sweep"
    strategies = ["feature_extraction", "gradual", "full"]
    args = sweep_args(sweep, images, f"strategy={','.join(strategies)}", "seed=0", "debug=fast")
    assert run_train_here(*args, monkeypatch=monkeypatch) == 0

    jobs = job_dirs(sweep)
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1", "2"]
    for job, strategy in zip(jobs, strategies, strict=True):
        assert f"strategy={strategy}" in job.name and "data.root" not in job.name
        assert f"strategy={strategy}" in OmegaConf.load(job / ".hydra/overrides.yaml")
        assert json.loads((job / "summary.json").read_text())["strategy"] == strategy
        assert result(job)["status"] == "completed"

    rows = report_rows(sweep)
    assert [r["strategy"] for r in rows] == strategies
    assert {r["status"] for r in rows} == {"completed"}
    assert all(float(r["value"]) >= 0 and float(r["train_time_s"]) > 0 for r in rows)
    md = (sweep / "sweep_summary.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and "runs" not in line]
    assert sorted(line.split(" | ")[0][2:] for line in table) == sorted(strategies)
    assert (sweep / "sweep_summary.png").stat().st_size > 1000

    # A second sweep into the same dir would overwrite these runs: refused, nothing touched.
    before = (sweep / "sweep_summary.csv").read_text()
    assert run_train_here(*args, monkeypatch=monkeypatch) != 0
    assert (sweep / "sweep_summary.csv").read_text() == before and len(job_dirs(sweep)) == 3


def test_a_failing_job_is_a_failed_row_and_the_sweep_goes_on(
    tmp_path: Path, images: Path, monkeypatch
) -> None:
    sweep = tmp_path / "sweep"
    args = sweep_args(sweep, images, "model.lr=-1,0.002", "strategy=full", "debug=fast")
    assert run_train_here(*args, monkeypatch=monkeypatch) == 0

    failed, ok = job_dirs(sweep)
    assert (
        result(failed)["status"] == "failed"
        and "model.lr=-1.0 is out of range: allowed > 0" in result(failed)["error"]
    )
    # A set-up failure leaves a summary.json that records it (no history, no checkpoint).
    failed_summary = json.loads((failed / "summary.json").read_text())
    assert failed_summary["status"] == "failed" and "model.lr=-1.0" in failed_summary["error"]
    assert not failed_summary.get("history") and not (failed / "checkpoints").exists()
    assert result(ok)["status"] == "completed"  # the job after the failure still ran
    rows = report_rows(sweep)
    assert [r["status"] for r in rows] == ["failed", "completed"]
    assert (
        "model.lr=-1.0 is out of range: allowed > 0" in rows[0]["error"] and rows[0]["value"] == ""
    )
    md = (sweep / "sweep_summary.md").read_text()
    assert "1 completed, 1 failed" in md and "## Failed runs" in md
    assert "0/1 (1 failed)" in md


def test_joblib_runs_two_jobs_in_parallel_workers(
    tmp_path: Path, images: Path, monkeypatch
) -> None:
    sweep = tmp_path / "sweep"
    args = sweep_args(
        sweep, images, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "strategy=feature_extraction,full", "debug=fast",
    )  # fmt: skip
    assert run_train_here(*args, monkeypatch=monkeypatch) == 0
    rows = report_rows(sweep)
    assert [(r["strategy"], r["status"]) for r in rows] == [
        ("feature_extraction", "completed"),
        ("full", "completed"),
    ]
    # loky workers share the cores: each job trains with cores // n_jobs threads.
    threads = {result(job)["torch_threads"] for job in job_dirs(sweep)}
    assert threads == {max(1, joblib.cpu_count() // 2)}


def test_slurm_launcher_writes_the_sbatch_script(tmp_path: Path, images: Path, monkeypatch) -> None:
    """hydra/launcher=slurm with trainer=ddp: one task per GPU. Submission is intercepted."""
    from submitit.slurm.slurm import SlurmExecutor

    scripts = []

    def submit(self, command: str):
        scripts.append(self._make_submission_file_text(command, "uid"))
        raise RuntimeError("submission intercepted by the test")

    monkeypatch.setattr(SlurmExecutor, "_submit_command", submit)
    fake_srun = tmp_path / "bin" / "srun"  # submitit looks for it; never run
    fake_srun.parent.mkdir()
    fake_srun.write_text("#!/bin/sh\nexit 1\n")
    fake_srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_srun.parent}{os.pathsep}{os.environ['PATH']}")
    args = sweep_args(
        tmp_path / "sweep", images, "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
        "trainer=ddp", "trainer.devices=4", "strategy=feature_extraction,full",
    )  # fmt: skip
    assert run_train_here(*args, monkeypatch=monkeypatch) != 0
    (script,) = scripts
    for line in (
        "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
        "#SBATCH --nodes=1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB",
        "#SBATCH --time=240", "#SBATCH --array=0-1%2",
    ):  # fmt: skip
        assert line in script.splitlines(), (line, script)


@pytest.mark.slow  # two fresh interpreters; the same submitit path as the SLURM test above
def test_submitit_local_runs_two_jobs(tmp_path: Path, images: Path, monkeypatch) -> None:
    sweep = tmp_path / "sweep"
    args = sweep_args(
        sweep,
        images,
        "hydra/launcher=submitit_local",
        "strategy=feature_extraction,full",
        "debug=fast",
    )
    assert run_train_here(*args, monkeypatch=monkeypatch) == 0
    rows = report_rows(sweep)
    assert [(r["strategy"], r["status"]) for r in rows] == [
        ("feature_extraction", "completed"),
        ("full", "completed"),
    ]
    assert list((sweep / ".submitit").glob("*/*_result.pkl")), "the jobs ran through submitit"


def test_optuna_runs_three_trials_and_reports_the_best(
    tmp_path: Path, images: Path, monkeypatch
) -> None:
    sweep = tmp_path / "sweep"
    args = sweep_args(
        sweep, images, "hparams_search=optuna", "hydra.sweeper.n_trials=3", "trainer.max_epochs=1"
    )
    assert run_train_here(*args[1:], monkeypatch=monkeypatch) == 0  # a multirun without -m

    jobs = job_dirs(sweep)
    assert len(jobs) == 3
    for job in jobs:  # each trial trained with the values Optuna drew
        drawn = dict(o.split("=", 1) for o in OmegaConf.load(job / ".hydra/overrides.yaml"))
        cfg = OmegaConf.load(job / ".hydra/config.yaml")
        assert float(drawn["model.lr"]) == cfg.model.lr and 1e-4 <= cfg.model.lr <= 1e-2
        assert int(drawn["strategy.every_n_epochs"]) == cfg.strategy.every_n_epochs
        assert cfg.data.mix.mode == "mixup" and 0.05 <= cfg.data.mix.mixup_alpha <= 0.4
    values = [result(job)["value"] for job in jobs]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == max(values)
    md = (sweep / "sweep_summary.md").read_text()
    assert f"Optuna best trial: val/acc = {best.best_value}" in md
    assert f"`model.lr={best.best_params['model.lr']}`" in md
    assert len(report_rows(sweep)) == 3


@pytest.mark.slow
def test_multirun_of_ddp_jobs(tmp_path: Path, images: Path, monkeypatch) -> None:
    """Each DDP job trains as a single run in its own process; the sweep is never re-launched."""
    sweep = tmp_path / "sweep"
    args = sweep_args(sweep, images, "trainer=ddp_cpu", "strategy=feature_extraction,gradual")
    assert run_train_here(*args, monkeypatch=monkeypatch) == 0
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(j.name for j in jobs)
    for job, strategy in zip(jobs, ("feature_extraction", "gradual"), strict=True):
        assert (job / "train_ddp_process_1.log").is_file()  # rank 1 ran, in this job's dir
        summary = json.loads((job / "summary.json").read_text())
        assert summary["strategy"] == strategy and len(summary["history"]) == 2
        assert result(job)["status"] == "completed"
        assert OmegaConf.load(job / ".hydra/config.yaml").trainer.devices == 2
    assert [r["status"] for r in report_rows(sweep)] == ["completed", "completed"]


def test_a_job_that_raised_past_train_is_recorded_as_failed(tmp_path: Path) -> None:
    from hydra.core.utils import JobReturn, JobStatus

    from thawkit.reporting.sweep_callback import SweepReportCallback

    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path / "0_job")}}})
    failed = JobReturn(status=JobStatus.FAILED, _return_value=MemoryError("out of memory"))
    SweepReportCallback().on_job_end(config, failed)
    record = result(tmp_path / "0_job")
    assert (record["status"], record["value"]) == ("failed", None)
    assert record["error"] == "MemoryError: out of memory"
    # A record the job wrote itself is kept.
    (tmp_path / "0_job" / "result.json").write_text('{"status": "completed"}')
    SweepReportCallback().on_job_end(config, failed)
    assert result(tmp_path / "0_job") == {"status": "completed"}
