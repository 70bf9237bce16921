"""One Hydra job: its outcome record (`result.json`), and DDP jobs of a multirun.

`result.json` sits next to `summary.json` in every run dir and says how the job ended:
`{"status": "completed" | "failed", "optimized_metric": "val/acc", "mode": "max",
"value": 0.93, "metrics": {...}, "error": "...", "wall_time_s": 61.0, "torch_threads": 1}`.
`value` is what `train.py` returned to the sweeper. The sweep report reads it, so a job that
failed still shows up as a row.

DDP inside a multirun: Lightning's DDP launcher starts ranks 1..N-1 by re-running the command
line (`sys.argv`). Inside a multirun job that command is the whole sweep (`-m ...`), and inside a
joblib or submitit worker it is not even `train.py`. So a multirun job whose trainer would launch
processes that way runs its training as a *single run* in a child process
(`python -m thawkit.run.entry ... hydra.run.dir=<the job's dir>`), for which Lightning's
Hydra-aware re-launch is correct, and waits for it. On SLURM (the launcher starts one task per
device) nothing is re-launched and the job trains in place.

`thawkit.run.entry` puts this module and `thawkit.run.train` together; neither imports the other.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from thawkit.compat import relaunches_script
from thawkit.reporting.result import RESULT_FILE, read_result, write_result

log = logging.getLogger(__name__)

# One path component must stay under 255 bytes: the job number and its overrides, shortened.
DIRNAME_LIMIT = 200


def job_dirname(overrides: str, limit: int = DIRNAME_LIMIT) -> str:
    """A multirun job's dir name from Hydra's `override_dirname` (`k=v,k=v`).

    Floats with many digits (Optuna draws) keep 4 significant digits, slashes become `-`
    (no nested folders), and the name is cut at `limit` characters. The job number in front
    keeps names unique; `.hydra/overrides.yaml` in the dir keeps the exact values.
    """
    items = []
    for item in overrides.split(","):
        key, sep, value = item.partition("=")
        if sep and "." in value and len(value) > 8:
            try:
                value = f"{float(value):.4g}"
            except ValueError:
                pass
        items.append(f"{key}{sep}{value}")
    return ",".join(items).replace("/", "-")[:limit]


# Used by hydra.sweep.subdir (src/thawkit/conf/hydra/default.yaml). Registered on import: every
# process that names a job dir (the sweep's, a joblib or submitit worker) imports the training
# entry, thawkit.run.entry, first.
OmegaConf.register_new_resolver("thawkit_job_dirname", job_dirname, replace=True)


def is_multirun() -> bool:
    """True inside a job of a Hydra multirun (sweep)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def metric_mode(cfg: DictConfig) -> str:
    """`max` or `min`: how the checkpoint callback (and the report) ranks the optimised metric."""
    mode = cfg.get("callbacks", {}).get("model_checkpoint", {}) or {}
    return str(mode.get("mode", "max"))


def needs_own_process(cfg: DictConfig) -> bool:
    """A multirun job whose trainer would start DDP ranks by re-running the command line."""
    if not is_multirun():
        return False
    trainer = instantiate(cfg.trainer, callbacks=[], logger=False, enable_progress_bar=False)
    launcher = trainer.strategy.launcher
    return (
        relaunches_script(launcher)
        and launcher.num_processes > 1
        and not launcher.cluster_environment.creates_processes_externally
    )


def child_command(hydra_cfg: DictConfig) -> list[str]:
    """The command that repeats this multirun job as a single run in the job's own dir."""
    sources = [s for s in hydra_cfg.runtime.config_sources if s.provider == "main"]
    if not sources or sources[0].schema != "file":
        raise RuntimeError("DDP in a multirun needs the primary config in a folder (--config-path)")
    output_dir = hydra_cfg.runtime.output_dir
    return [
        sys.executable,
        "-m",
        "thawkit.run.entry",
        f"--config-path={sources[0].path}",
        f"--config-name={hydra_cfg.job.config_name}",
        *hydra_cfg.overrides.task,
        # The job dir already holds .hydra/ of this job: the child writes only its log there.
        f'hydra.run.dir="{output_dir}"',
        "hydra.output_subdir=null",
        "hydra.mode=RUN",
        "hydra.job.name=train",  # its log: train.log, as for any run
    ]


def run_in_own_process(cfg: DictConfig) -> float | None:
    """Train this multirun job as a single run in a child process; return what it returned."""
    hydra_cfg = HydraConfig.get()
    command = child_command(hydra_cfg)
    output_dir = hydra_cfg.runtime.output_dir
    log.info("DDP job: training in a child process in %s", output_dir)
    done = subprocess.run(command, cwd=hydra_cfg.runtime.cwd, check=False)
    result = read_result(output_dir)
    if done.returncode != 0 or result is None or result.get("status") != "completed":
        raise RuntimeError(
            f"The DDP training process exited with code {done.returncode}; its log is in "
            f"{output_dir}/train.log (and train_ddp_process_*.log)"
        )
    return result.get("value")


def run(cfg: DictConfig, train: Callable[[DictConfig], dict[str, float]]) -> float | None:
    """Run `train(cfg)` as one job and record its outcome; return the optimised metric.

    The value returned is the best value of `optimized_metric` (what the kept checkpoint
    scored, `<metric>_best`), else its last value. In a multirun a failing job is recorded as
    failed and returns NaN, so the sweep goes on (Hydra's sweepers stop at the first job
    that raises) and the report lists it; a single run raises as usual.
    """
    name = cfg.get("optimized_metric")
    outcome = {"optimized_metric": name, "mode": metric_mode(cfg)}
    output_dir = cfg.paths.output_dir
    started = time.perf_counter()
    try:
        if needs_own_process(cfg):
            return run_in_own_process(cfg)  # the child wrote result.json
        metrics = train(cfg)
        if name and name not in metrics:
            raise KeyError(
                f"optimized_metric={name!r} was not logged; logged metrics: {sorted(metrics)}"
            )
    except Exception as e:
        if not is_multirun():
            raise
        log.exception("This job failed; the sweep goes on (recorded in %s)", RESULT_FILE)
        error = "".join(traceback.format_exception_only(type(e), e)).strip()
        wall = round(time.perf_counter() - started, 3)
        write_result(
            output_dir, status="failed", value=None, error=error, wall_time_s=wall, **outcome
        )
        return float("nan")
    value = metrics.get(f"{name}_best", metrics.get(name)) if name else None
    if rank_zero_only.rank == 0:  # under DDP, one record per job
        wall = round(time.perf_counter() - started, 3)
        write_result(
            output_dir,
            status="completed",
            value=value,
            metrics=metrics,
            wall_time_s=wall,
            **outcome,
        )
    return value
