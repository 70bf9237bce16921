"""The `logger` group: every choice composes and runs the tiny config; set-up fails fast.

CSV holds the named LR of every layer group; W&B writes an offline run into the run dir; many
(TensorBoard + CSV + MLflow on a local SQLite store) gives MLflow the metrics, the config, the
run's files and the model. A missing package and a tracking server that does not answer fail
before any data is read, naming the fix. The real MLflow server: test_mlflow_server.py.
"""

from __future__ import annotations

import csv
import json
import socket
import time
from pathlib import Path

import pytest
from omegaconf import open_dict

from conftest import tiny_cfg
from thawkit.reporting import trackers
from thawkit.reporting.sweep_report import tracker_lines
from thawkit.reporting.trackers import TrackerError, check_loggers, logger_nodes, run_tags
from thawkit.run.train import train

LIMITS = ["debug=limit", "trainer.max_epochs=2"]


@pytest.mark.parametrize(
    ("choice", "names"),
    [
        ("tensorboard", ["tensorboard"]),
        ("csv", ["csv"]),
        ("mlflow", ["mlflow"]),
        ("wandb", ["wandb"]),
        ("many", ["tensorboard", "csv", "mlflow"]),
    ],
)
def test_logger_choices_compose(tmp_path: Path, choice: str, names: list[str]) -> None:
    cfg = tiny_cfg(tmp_path, [f"logger={choice}"])
    nodes = logger_nodes(cfg)
    assert list(nodes) == names
    for node in nodes.values():
        assert node._target_.startswith("lightning.pytorch.loggers.")
    if "mlflow" in nodes:
        assert nodes["mlflow"].tracking_uri.startswith("sqlite:///")
        assert nodes["mlflow"].tracking_uri.endswith("/mlruns/mlflow.db")
    if "wandb" in nodes:
        assert nodes["wandb"].offline is True
        assert nodes["wandb"].save_dir == cfg.paths.output_dir


def test_default_is_tensorboard_and_a_one_node_config_still_works(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path)
    assert list(logger_nodes(cfg)) == ["tensorboard"]
    with open_dict(cfg):  # a config of an earlier version: one logger node
        cfg.logger = cfg.logger.tensorboard
    assert list(logger_nodes(cfg)) == ["logger"]


def test_csv_holds_the_named_lr_of_every_group(make_cfg) -> None:
    cfg = make_cfg("logger=csv", *LIMITS)
    train(cfg)
    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    groups = set(summary["history"][0]["lr"])
    assert {"head", "stem"} <= groups
    assert {f"lr/{g}" for g in groups} <= columns
    assert {"trainable_params", "val/acc", "train/loss_epoch", "best/val_acc"} <= columns
    assert [float(r["lr/head"]) for r in rows if r["lr/head"]][0] > 0
    hparams = (Path(cfg.paths.output_dir) / "csv" / "hparams.yaml").read_text()
    assert "strategy:" in hparams and "optimizer:" in hparams  # the composed config


def test_wandb_writes_an_offline_run_into_the_run_dir(make_cfg) -> None:
    cfg = make_cfg("logger=wandb", *LIMITS)
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    files = offline[0] / "files"
    assert json.loads((files / "summary.json").read_text())["strategy"] == "full"
    images = {p.name.rsplit("_", 2)[0] for p in (files / "media" / "images" / "plots").iterdir()}
    assert {"confusion_matrix", "curves"} <= images
    record = json.loads((run_dir / "summary.json").read_text())["trackers"]["wandb"]
    assert record["run_id"] in offline[0].name
    import wandb

    assert wandb.run is None  # finished with the job: the next job starts its own run
    assert list(offline[0].glob("run-*.wandb"))  # what `wandb sync` uploads


@pytest.mark.slow  # test_mlflow_server.py covers MLflow in the default suite
def test_many_gives_mlflow_metrics_config_files_and_model(make_cfg, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    cfg = make_cfg("logger=many", f"logger.mlflow.tracking_uri={uri}", *LIMITS)
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    record = json.loads((run_dir / "summary.json").read_text())["trackers"]["mlflow"]
    client = MlflowClient(uri)
    run = client.get_run(record["run_id"])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "thawkit"
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2
    assert run.data.params["strategy/name"] == "full"  # the composed config
    assert "paths/output_dir" not in run.data.params  # where, not what: the run_dir tag
    assert run.data.tags["run_dir"] == str(run_dir)
    assert "lr/stem" in run.data.metrics and "trainable_params" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "plots", "model"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/confusion_matrix.png" in plots and "plots/curves.png" in plots
    model = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert model == {"model/best.ckpt", "model/preprocessing.json"}
    assert run.data.tags["best_checkpoint"].endswith("best.ckpt")
    assert (tmp_path / "store" / "artifacts").is_dir()  # beside the database


def test_missing_package_names_the_install_command(tmp_path: Path, monkeypatch) -> None:
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(
        trackers.importlib.util, "find_spec", lambda n: None if n == "wandb" else real(n)
    )
    cfg = tiny_cfg(tmp_path, ["logger=wandb"])
    with pytest.raises(TrackerError, match=r"pip install 'thawkit\[trackers\]'"):
        check_loggers(cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_down_server_fails_at_set_up_within_seconds(make_cfg) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    cfg = make_cfg("logger=mlflow", f"logger.mlflow.tracking_uri={uri}")
    with open_dict(cfg):
        cfg.data.root = str(Path(cfg.paths.output_dir) / "never-read")  # set-up stops before
    start = time.perf_counter()
    with pytest.raises(TrackerError, match=f"tracking server {uri} does not answer"):
        train(cfg)
    assert time.perf_counter() - start < 10


def test_silent_server_times_out(monkeypatch) -> None:
    monkeypatch.setattr(trackers, "SERVER_TIMEOUT_S", 0.5)
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        uri = f"https://user:secret@127.0.0.1:{server.getsockname()[1]}"
        start = time.perf_counter()
        with pytest.raises(TrackerError, match="does not answer") as e:
            trackers.check_server(uri)
    assert time.perf_counter() - start < 5
    assert "secret" not in str(e.value)


def test_sweep_tags_name_the_overrides() -> None:
    identity = {
        "name": "1_strategy=gradual",
        "dir": "multirun/x/1_strategy=gradual",
        "sweep": "multirun/x",
        "job": 1,
        "overrides": ["strategy=gradual", "+unfreeze=on_plateau"],
        "override_dirname": "+unfreeze=on_plateau,strategy=gradual",
    }
    tags = run_tags(identity)
    assert tags["override.strategy"] == "gradual" and tags["override.unfreeze"] == "on_plateau"
    assert tags["sweep"] == "multirun/x" and tags["sweep_job"] == "1"


def test_sweep_report_links_runs_and_the_compare_view() -> None:
    rows = [
        {
            "job": f"{i}_seed={i}",
            "mlflow_run": f"http://127.0.0.1:5000/#/experiments/3/runs/r{i}",
            "mlflow": {"run_id": f"r{i}", "experiment_id": "3", "ui": "mlflow ui"},
        }
        for i in range(2)
    ]
    text = "\n".join(tracker_lines(rows))
    assert 'compare-runs?runs=["r0","r1"]&experiments=["3"]' in text
    assert "[0_seed=0](http://127.0.0.1:5000/#/experiments/3/runs/r0)" in text
    assert tracker_lines([{"job": "a", "mlflow_run": None}]) == []
