"""The runs of a sweep, read back: find every run under a folder and read its record into a row.

A run is a folder holding `.hydra/overrides.yaml`, `summary.json` or `result.json`. A run
without a record of a finished job (`result.json`, `summary.json`) is a failed row: it was
killed, or is still running. reporting/sweep_report.py groups and writes these rows.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from thawkit.reporting.result import RESULT_FILE

log = logging.getLogger(__name__)


SUMMARY_FILE = "summary.json"


# Folders inside a run that never hold another run.
_SKIP = {"checkpoints", "tensorboard", "plots", ".submitit", ".hydra"}


# Columns the report fills itself; an override of the same name is shown there.
FIXED_COLUMNS = ["strategy", "backbone", "seed"]


# best/target/acc: domain adaptation's accuracy on the labelled target folder (da=...).
BEST_KEYS = [
    "best/epoch", "best/val/acc", "best/val/loss", "best/val/f1_macro", "best/target/acc",
]  # fmt: skip


NO_RECORD = "no result.json or summary.json: the job was killed, or is still running"


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError) as e:
        log.warning("Unreadable %s: %s", path, e)
        return None


def _job_order(path: Path) -> tuple:
    # Multirun subdirs start with the job number: 2_... before 10_...
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path)))


def find_runs(root: str | Path) -> list[Path]:
    """Every run folder under `root` (or `root` itself), in job order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of runs (a multirun or outputs dir)")
    runs: set[Path] = set()
    markers = (".hydra/overrides.yaml", SUMMARY_FILE, RESULT_FILE)
    stack = [root]
    while stack:
        folder = stack.pop()
        if any((folder / m).is_file() for m in markers):
            runs.add(folder)
        for child in folder.iterdir():
            if child.is_dir() and child.name not in _SKIP and not child.is_symlink():
                stack.append(child)
    return sorted(runs, key=_job_order)


def _parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    parsed = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if sep:
            parsed[key.lstrip("+~")] = value
    return parsed


def _strategy(summary: dict[str, Any], configured: Any) -> Any:
    """The run's strategy; `auto (full)` for strategy=auto, naming what auto picked."""
    strategy = summary.get("strategy") or configured
    chosen = (summary.get("auto") or {}).get("chosen")
    return f"{strategy} ({chosen})" if strategy == "auto" and chosen else strategy


def read_run(run: Path, root: Path) -> dict[str, Any]:
    """One report row from a run folder's records."""
    hydra_dir = run / ".hydra"
    overrides = []
    if (hydra_dir / "overrides.yaml").is_file():
        overrides = [str(o) for o in OmegaConf.load(hydra_dir / "overrides.yaml")]
    config = (
        OmegaConf.load(hydra_dir / "config.yaml") if (hydra_dir / "config.yaml").is_file() else None
    )

    def from_config(key: str) -> Any:
        return OmegaConf.select(config, key, default=None) if config is not None else None

    summary = _load_json(run / SUMMARY_FILE) or {}
    result = _load_json(run / RESULT_FILE) or {}
    metric = result.get("optimized_metric") or from_config("optimized_metric") or "val/acc"
    mode = result.get("mode") or from_config("callbacks.model_checkpoint.mode")
    mode = mode or ("min" if "loss" in metric else "max")
    # No result.json: a run from before thawkit.run.job, or one that was killed.
    # A summary.json alone says how the run ended (a single run that failed during set-up).
    status = result.get("status", "completed") if result else None
    status = status or (summary.get("status", "completed") if summary else "failed")
    best = summary.get("best", {})
    value = result.get("value") if result else None
    if value is None and status == "completed":
        value = best.get(metric, summary.get("test", {}).get(metric))
    row: dict[str, Any] = {
        "job": str(run.relative_to(root)) if run != root else run.name,
        "status": status,
        "overrides": " ".join(overrides),
        "factors": _parse_overrides(overrides),
        "strategy": _strategy(summary, from_config("strategy.name")),
        "backbone": summary.get("backbone") or from_config("model.backbone"),
        "seed": summary.get("seed", from_config("seed")),
        "metric": metric,
        "mode": mode,
        "value": value,
        **{k: best.get(k.removeprefix("best/")) for k in BEST_KEYS},
        **{k: v for k, v in summary.get("test", {}).items()},
        "train_time_s": summary.get("train_time_s"),
        "images_per_s": summary.get("images_per_s"),
        "epochs": len(summary.get("history", [])) or None,
        "wall_time_s": result.get("wall_time_s"),
        "verdict": str(summary.get("diagnosis", "")).split(":")[0] or None,
        "diagnosis": summary.get("diagnosis"),
        "error": result.get("error") or (None if status == "completed" else NO_RECORD),
        # The run in MLflow (logger=mlflow or many), as RunSummary recorded it.
        "mlflow": (summary.get("trackers") or {}).get("mlflow"),
        "mlflow_run": ((summary.get("trackers") or {}).get("mlflow") or {}).get("run_url"),
    }
    return row


def collect(root: str | Path) -> list[dict[str, Any]]:
    """Report rows of every run under `root`."""
    root = Path(root)
    return [read_run(run, root) for run in find_runs(root)]
