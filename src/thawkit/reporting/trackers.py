"""The run's loggers (the `logger` group): checked before any data is read, then built.

Every file of src/thawkit/conf/logger/ holds one node per Lightning logger, named by its kind
(`logger.tensorboard`, `logger.csv`, `logger.mlflow`, `logger.wandb`); `logger=many` composes
three of them. A config of an earlier version holds one node (`logger._target_`): that is one
logger too.

Set-up (`check_loggers`, from thawkit.run.preflight) fails in seconds, before the image scan: a
logger whose package is missing names the install command; an MLflow tracking server that does
not answer names its URI. MLflow's client would otherwise retry for minutes at the first
metric, after an epoch of training. `build_loggers` fills what the YAML leaves to the run (the
MLflow experiment: one per multirun; run names, the swept overrides as tags); the imports of
mlflow and wandb happen only when their logger is chosen.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

INSTALL = "pip install 'thawkit[trackers]'"
# Logger class -> the package it needs (TensorBoard and CSV come with thawkit).
PACKAGES = {"MLFlowLogger": "mlflow", "WandbLogger": "wandb"}
SINGLE_RUN_EXPERIMENT = "thawkit"
# How long the set-up waits for a tracking server's answer.
SERVER_TIMEOUT_S = 5.0
# MLflow's HTTP client retries 7 times with exponential backoff by default (minutes when the
# server goes away mid-run); these are the defaults thawkit sets, an environment's own win.
MLFLOW_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class TrackerError(RuntimeError):
    """A logger cannot start: its package is missing, or its tracking server does not answer."""


# --------------------------------------------------------------------------- the config
def logger_nodes(cfg: DictConfig) -> dict[str, DictConfig]:
    """The configured loggers by name (`logger.csv=null` leaves one out)."""
    node = cfg.get("logger")
    if not node:
        return {}
    if "_target_" in node:  # one logger, as configs of earlier versions hold it
        return {"logger": node}
    return {name: n for name, n in node.items() if n is not None}


def kind(node: DictConfig) -> str:
    """The logger's class name (`MLFlowLogger`)."""
    return str(node.get("_target_", "")).rsplit(".", 1)[-1]


def tracking_uri(node: DictConfig) -> str:
    """The MLflow store: the config's, else MLflow's environment variable, else ./mlruns."""
    return str(node.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or "file:./mlruns")


def _is_http(uri: str) -> bool:
    return urllib.parse.urlsplit(uri).scheme in ("http", "https")


def _shown(uri: str) -> str:
    """The URI without a password, for messages."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def local_store_dir(uri: str) -> Path | None:
    """The folder of a local MLflow store (sqlite:///DIR/mlflow.db, file:DIR, a path), else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).parent
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path) or ".")
    if parts.scheme == "" or len(parts.scheme) == 1:  # a plain path (or a Windows drive)
        return Path(uri)
    return None


# --------------------------------------------------------------------------- the run
def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The run's name (its run dir's), and in a multirun its sweep dir, job number, overrides."""
    run_dir = str(cfg.paths.output_dir)
    identity: dict[str, Any] = {"name": Path(run_dir).name, "dir": run_dir}
    if not HydraConfig.initialized():
        return identity
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        identity["sweep"] = str(hydra.sweep.dir)
        identity["job"] = int(hydra.job.num)
        identity["overrides"] = [str(o) for o in hydra.overrides.task]
        identity["override_dirname"] = str(hydra.job.override_dirname)
    return identity


def run_tags(identity: dict[str, Any]) -> dict[str, str]:
    """Tags that say where a run comes from: the run dir, and the sweep with its overrides."""
    tags = {"run_dir": identity["dir"]}
    if "sweep" in identity:
        tags |= {
            "sweep": identity["sweep"],
            "sweep_job": str(identity["job"]),
            "sweep_overrides": identity["override_dirname"],
        }
        for item in identity["overrides"]:
            key, sep, value = item.partition("=")
            if sep:
                tags[f"override.{key.lstrip('+~')}"] = value
    return tags


def experiment_name(node: DictConfig, identity: dict[str, Any]) -> str:
    """The config's, else one experiment per multirun (its sweep dir), else `thawkit`."""
    return str(node.get("experiment_name") or identity.get("sweep") or SINGLE_RUN_EXPERIMENT)


def artifact_location(node: DictConfig) -> str | None:
    """Where a new experiment keeps artifacts: the config's, or beside a local store's database."""
    if node.get("artifact_location"):
        return str(node.artifact_location)
    store = local_store_dir(tracking_uri(node))
    return str((store / "artifacts").resolve()) if store is not None else None


# --------------------------------------------------------------------------- set-up checks
def check_server(uri: str, timeout: float | None = None) -> None:
    """An http(s) tracking server answers within `timeout` seconds (any HTTP answer will do)."""
    try:
        url = uri.rstrip("/") + "/health"
        with urllib.request.urlopen(url, timeout=timeout or SERVER_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # it answered, if not with OK: the client will say more
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise TrackerError(
            f"The MLflow tracking server {_shown(uri)} does not answer ({reason}). Start it "
            "(mlflow server --host 127.0.0.1 --port 5000), or set logger.mlflow.tracking_uri to "
            "a running server or to a local store (sqlite:///mlruns/mlflow.db)."
        ) from e


def check_package(name: str, node: DictConfig) -> None:
    """The logger's package is installed (found, not imported)."""
    package = PACKAGES.get(kind(node))
    if package is not None and importlib.util.find_spec(package) is None:
        raise TrackerError(
            f"logger.{name} ({kind(node)}) needs the {package} package, which is not installed: "
            f"{INSTALL} (or pip install {package}), or choose another logger (logger=tensorboard)."
        )


def check_loggers(cfg: DictConfig) -> None:
    """Every logger can start: packages present, MLflow stores reachable, experiments made."""
    for name, node in logger_nodes(cfg).items():
        check_package(name, node)
        if kind(node) == "MLFlowLogger" and rank_zero_only.rank == 0:
            prepare_mlflow(node, run_identity(cfg))


def prepare_mlflow(node: DictConfig, identity: dict[str, Any]) -> str:
    """Reach the store and make the run's experiment; returns its id.

    The jobs of a parallel multirun (joblib) start together: a lock beside a local store lets
    one of them create the database and the experiment, and an experiment another job made a
    moment earlier is taken as it is.
    """
    uri = tracking_uri(node)
    if _is_http(uri):
        for key, value in MLFLOW_HTTP_ENV.items():
            os.environ.setdefault(key, value)
        check_server(uri)
    store = local_store_dir(uri)
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name = experiment_name(node, identity)
    client = MlflowClient(uri)
    lock = FileLock(str(store / ".thawkit.lock")) if store is not None else None
    try:
        if lock is not None:
            lock.acquire(timeout=120)
        try:
            found = client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            return client.create_experiment(name, artifact_location=artifact_location(node))
        except MlflowException:
            found = client.get_experiment_by_name(name)  # made by another job just now
            if found is None:
                raise
            return found.experiment_id
    except MlflowException as e:
        raise TrackerError(f"The MLflow store {_shown(uri)} cannot be used: {e}") from e
    finally:
        if lock is not None and lock.is_locked:
            lock.release()


# --------------------------------------------------------------------------- building
def _arguments(node: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    """What the YAML leaves null for the run to fill, by logger kind."""
    identity = run_identity(cfg)
    if kind(node) == "MLFlowLogger":
        tags = run_tags(identity) | dict(node.get("tags") or {})
        return {
            "tracking_uri": tracking_uri(node),
            "experiment_name": experiment_name(node, identity),
            "run_name": node.get("run_name") or identity["name"],
            "tags": tags,
            "artifact_location": artifact_location(node),
        }
    if kind(node) == "WandbLogger":
        finish_open_wandb_run()
        return {
            "name": node.get("name") or identity["name"],
            "group": node.get("group") or identity.get("sweep"),
            "tags": list(node.get("tags") or []) or None,
        }
    return {}


def finish_open_wandb_run() -> None:
    """A W&B run an earlier job of this process left open is finished, so that this job's
    logger starts its own run (WandbLogger would otherwise log into the open one)."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The configured loggers, in the order of the config (the first is `trainer.logger`)."""
    loggers = []
    for node in logger_nodes(cfg).values():
        arguments = {k: v for k, v in _arguments(node, cfg).items() if v is not None}
        loggers.append(instantiate(node, _convert_="all", **arguments))
    return loggers


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """The composed config (without hydra's own keys) as every logger's hyperparameters.

    MLflow and W&B compare runs by their params: values that hold the run's own dir (paths,
    checkpoint dirs) differ between any two runs and say where a run is, not what it trains,
    so they leave those out (the `run_dir` tag says where).
    """
    run_keys = [k for k in cfg if k != "hydra"]
    params = OmegaConf.to_container(OmegaConf.masked_copy(cfg, run_keys), resolve=True)
    run_dir = str(cfg.paths.output_dir)
    for logger in loggers:
        compared = kind_of(logger) in PACKAGES
        logger.log_hyperparams(without_run_dir(params, run_dir) if compared else params)


def without_run_dir(params: Any, run_dir: str) -> Any:
    """`params` less every string value that holds `run_dir` (and the nodes left empty)."""
    if isinstance(params, dict):
        kept = {k: without_run_dir(v, run_dir) for k, v in params.items()}
        return {k: v for k, v in kept.items() if v is not _DROP and v != {}}
    if isinstance(params, str) and run_dir in params:
        return _DROP
    return params


_DROP = object()


def finish_runs(loggers: list[Logger], exit_code: int = 0) -> None:
    """End the runs that stay open until the process exits (W&B's), so that the offline run is
    complete when the job ends and the next job of a multirun starts its own."""
    for logger in loggers:
        run = getattr(logger, "_experiment", None) if kind_of(logger) == "WandbLogger" else None
        if run is not None and hasattr(run, "finish"):
            run.finish(exit_code=exit_code)


def kind_of(logger: Logger) -> str:
    return type(logger).__name__
