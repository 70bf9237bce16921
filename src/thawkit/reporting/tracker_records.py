"""What every logger gets beyond the scalars the module logs: the run's files and verdict.

The module logs losses, metrics, `lr/<group>` and `trainable_params` to every logger, and the
run entry logs the composed config as hyperparameters (thawkit.reporting.trackers.log_config).
`TrackerRecords` (a callback that run/train.py places after RunSummary, so that summary.json
and plots/ are written when it runs) adds, where a logger can hold it:

- MLflow: artifacts `summary.json`, `plots/*.png` (confusion matrices, curves, class counts),
  `model/best.ckpt` with `model/preprocessing.json`; metrics `best/*`, `final/*`; tags
  `best_checkpoint`, `diagnosis`, `status`.
- W&B: images `plots/<name>`, the file `summary.json`; in the run summary `best/*`, `final/*`,
  `best_checkpoint`, `diagnosis`.
- CSV: metrics `best/*`, `final/*` (its last row).
- TensorBoard: nothing here; RunViews (thawkit.reporting.tensorboard) draws its own views.

It also records each tracker's run in `summary.json["trackers"]`, which the sweep report reads
to link every row to its run.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from thawkit.finetune.module import FineTuneModule
from thawkit.reporting.summary import RunSummary
from thawkit.reporting.tensorboard import final_metrics
from thawkit.reporting.trackers import finish_runs, local_store_dir

log = logging.getLogger(__name__)

# Where `mlflow ui` serves by default: the link to a run of a local store.
MLFLOW_UI = "http://127.0.0.1:5000"


def mlflow_ui(tracking_uri: str) -> tuple[str, str | None]:
    """The web address of a store's runs, and for a local store the command that serves it."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/"), None
    store = local_store_dir(tracking_uri)
    where = tracking_uri if store is None or tracking_uri.startswith("sqlite") else str(store)
    return MLFLOW_UI, f"mlflow ui --backend-store-uri {where}"


def mlflow_record(logger: MLFlowLogger) -> dict[str, Any]:
    """Where the run is in MLflow: store, experiment, run and its web address."""
    base, command = mlflow_ui(logger._tracking_uri)
    experiment, run = logger.experiment_id, logger.run_id
    record = {
        "tracking_uri": logger._tracking_uri,
        "experiment_id": experiment,
        "run_id": run,
        "run_url": f"{base}/#/experiments/{experiment}/runs/{run}",
    }
    if command:
        record["ui"] = command
    return record


class TrackerRecords(L.Callback):
    """Hands every logger the run's files, best and final metrics, and verdict (table above)."""

    def __init__(self) -> None:
        self._metrics_logged = False
        self._sent: dict[Path, float] = {}  # file -> its mtime when handed over

    @staticmethod
    def _summary(trainer: L.Trainer) -> RunSummary | None:
        return next((c for c in trainer.callbacks if isinstance(c, RunSummary)), None)

    @staticmethod
    def _trackers(trainer: L.Trainer) -> list[Logger]:
        return [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger | WandbLogger)]

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        summary = self._summary(trainer)
        records: dict[str, Any] = {}
        for logger in self._trackers(trainer):
            if isinstance(logger, MLFlowLogger):
                records["mlflow"] = mlflow_record(logger)
            else:
                run = logger.experiment
                records["wandb"] = {"run_id": run.id, "dir": str(Path(run.dir).parent)}
        if summary is not None and records:
            summary.extra["trackers"] = records

    def teardown(self, trainer: L.Trainer, pl_module: FineTuneModule, stage: str) -> None:
        # After every on_fit_end / on_test_end (summary.json written), before the loggers close.
        if stage in ("fit", "test"):
            self.record(trainer, pl_module, with_model=stage == "fit")

    def on_exception(
        self, trainer: L.Trainer, pl_module: FineTuneModule, exception: BaseException
    ) -> None:
        self.record(trainer, pl_module, with_model=False)  # the summary says how it ended
        finish_runs(trainer.loggers, exit_code=1)

    @rank_zero_only
    def record(self, trainer: L.Trainer, pl_module: FineTuneModule, with_model: bool) -> None:
        """Give every logger the run's files and numbers as they are now."""
        summary = self._summary(trainer)
        if summary is None:
            return
        run_dir = summary.path.parent
        metrics = {} if self._metrics_logged else final_metrics(trainer, summary)
        self._metrics_logged = self._metrics_logged or bool(metrics)
        record = _read_json(summary.path)
        files = self._changed([summary.path, *sorted((run_dir / "plots").glob("*.png"))])
        ckpt_cb = trainer.checkpoint_callback
        best = Path(ckpt_cb.best_model_path) if ckpt_cb and ckpt_cb.best_model_path else None
        model = best if with_model else None  # the checkpoint goes to MLflow once, after fit
        for logger in trainer.loggers:
            try:
                if isinstance(logger, MLFlowLogger):
                    _to_mlflow(logger, run_dir, files, record, metrics, model)
                elif isinstance(logger, WandbLogger):
                    _to_wandb(logger, run_dir, files, record, metrics, best)
                elif isinstance(logger, CSVLogger) and metrics:
                    logger.log_metrics(metrics, step=trainer.global_step)
            except Exception as e:  # a tracker's hiccup must not fail a run that trained
                log.warning("Could not hand the run's records to %s: %s", type(logger).__name__, e)
        self._sent.update({f: f.stat().st_mtime for f in files})

    def _changed(self, files: list[Path]) -> list[Path]:
        """The files that exist and were not handed over as they are now (test after fit)."""
        return [f for f in files if f.is_file() and self._sent.get(f) != f.stat().st_mtime]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def model_card(record: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """What a user of the logged checkpoint needs beside it: classes and preprocessing."""
    return {
        "checkpoint": checkpoint.name,
        "backbone": record.get("backbone"),
        "num_classes": record.get("num_classes"),
        "class_names": record.get("class_names"),
        "image_size": record.get("image_size"),
        "preprocessing": record.get("preprocessing"),
        "use": f"python predict.py ckpt={checkpoint.name} input=IMAGE_OR_FOLDER",
    }


def _to_mlflow(
    logger: MLFlowLogger,
    run_dir: Path,
    files: list[Path],
    record: dict[str, Any],
    metrics: dict[str, float],
    checkpoint: Path | None,
) -> None:
    client, run = logger.experiment, logger.run_id
    if metrics:
        logger.log_metrics(metrics, step=0)
    for file in files:  # summary.json at the top, plots/ as plots/
        folder = file.parent.relative_to(run_dir).as_posix()
        client.log_artifact(run, str(file), None if folder == "." else folder)
    if checkpoint is not None and checkpoint.is_file():
        client.log_artifact(run, str(checkpoint), "model")
        with tempfile.TemporaryDirectory() as tmp:
            card = Path(tmp) / "preprocessing.json"
            card.write_text(json.dumps(model_card(record, checkpoint), indent=2))
            client.log_artifact(run, str(card), "model")
        client.set_tag(run, "best_checkpoint", str(checkpoint.resolve()))
    for key in ("diagnosis", "status"):
        if record.get(key):
            client.set_tag(run, key, str(record[key])[:5000])


def _to_wandb(
    logger: WandbLogger,
    run_dir: Path,
    files: list[Path],
    record: dict[str, Any],
    metrics: dict[str, float],
    checkpoint: Path | None,
) -> None:
    run = logger.experiment
    for file in files:
        if file.suffix == ".png":
            logger.log_image(f"plots/{file.stem}", images=[str(file)])
        else:
            run.save(str(file), base_path=str(run_dir), policy="now")
    values: dict[str, Any] = dict(metrics)
    if checkpoint is not None:
        values["best_checkpoint"] = str(checkpoint.resolve())
    if record.get("diagnosis"):
        values["diagnosis"] = record["diagnosis"]
    run.summary.update(values)
