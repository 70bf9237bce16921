"""MLflow against a real tracking server: a 2-job multirun, read back through the client.

The test starts `mlflow server` (SQLite backend, a free localhost port), runs
`train.py -m logger=mlflow seed=0,1` on it, and checks what MLflow holds: one experiment with
one run per job, tagged with its overrides; metrics per epoch; the config as params;
summary.json, the confusion matrix and the model as artifacts; the sweep report's links.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import make_image_folder
from train_cli import TINY, run_train_here

# In the default suite (about a minute on an idle 2-core machine): the issue asks for a real
# server in CI. The file-store MLflow test of test_trackers.py is the slow one instead.
MLFLOW = Path(sys.executable).with_name("mlflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A running `mlflow server` on a SQLite store; yields its URI."""
    if not MLFLOW.is_file() and shutil.which("mlflow") is None:
        pytest.skip("the mlflow command is not installed")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        str(MLFLOW if MLFLOW.is_file() else shutil.which("mlflow")), "server",
        "--backend-store-uri", f"sqlite:///{tmp_path}/server/mlflow.db",
        "--default-artifact-root", str(tmp_path / "server" / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    (tmp_path / "server").mkdir()
    log = (tmp_path / "server" / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "mlflow server did not start:\n"
                    + (tmp_path / "server" / "server.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


def test_multirun_on_a_tracking_server(tmp_path: Path, mlflow_server: str, monkeypatch) -> None:
    from mlflow import MlflowClient

    images = make_image_folder(tmp_path / "images", (12, 12), ("train", "val"))
    sweep = tmp_path / "sweep"
    args = [
        "-m", *TINY, f"data.root={images}", f"hydra.sweep.dir={sweep}", "debug=limit",
        "logger=mlflow", f"logger.mlflow.tracking_uri={mlflow_server}", "seed=0,1",
    ]  # fmt: skip
    assert run_train_here(*args, monkeypatch=monkeypatch) == 0

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(str(sweep))
    assert experiment is not None  # one experiment for the multirun
    runs = client.search_runs([experiment.experiment_id], order_by=["tags.`sweep_job` ASC"])
    assert len(runs) == 2
    for job, run in enumerate(runs):
        assert run.info.status == "FINISHED"
        assert run.data.tags["sweep_job"] == str(job)
        assert run.data.tags["override.seed"] == str(job)
        assert run.data.params["seed"] == str(job)  # the composed config as params
        assert run.data.params["strategy/name"] == "full"
        history = client.get_metric_history(run.info.run_id, "val/acc")
        assert sorted(m.step for m in history) == sorted({m.step for m in history})
        assert len(history) == 2  # one per epoch
        assert "lr/head" in run.data.metrics and "trainable_params" in run.data.metrics
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert "summary.json" in top and "plots/confusion_matrix.png" in plots
        local = client.download_artifacts(
            run.info.run_id, "summary.json", str(tmp_path / f"d{job}")
        )
        assert json.loads(Path(local).read_text())["seed"] == job
        model = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
        assert model == {"model/best.ckpt", "model/preprocessing.json"}

    report = (sweep / "sweep_summary.md").read_text()
    assert f"{mlflow_server}/#/compare-runs?runs=" in report
    for run in runs:
        assert (
            f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
            in report
        )
