"""Hydra callback of every multirun: one dir per sweep, failed jobs recorded, a report at the end.

Configured in `src/thawkit/conf/hydra/default.yaml` (`hydra.callbacks.sweep_report`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from thawkit.reporting import result
from thawkit.reporting import sweep_report as report

log = logging.getLogger(__name__)


class SweepReportCallback(Callback):
    """Refuses a used sweep dir, records jobs that raised, writes the sweep report at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A second sweep in the same dir would number its jobs from 0 again and overwrite them.
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and any(sweep_dir.iterdir()):
            # SystemExit, not an exception: Hydra turns exceptions raised in callbacks into
            # warnings and would start the sweep anyway.
            raise SystemExit(
                f"Error: hydra.sweep.dir={sweep_dir} already holds a sweep, whose runs would be "
                "overwritten. Pick a new hydra.sweep.dir (the default is timestamped)."
            )

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        # thawkit.run.job.run records its own failures; this catches anything that escaped it.
        output_dir = config.hydra.runtime.output_dir
        if job_return.status == JobStatus.FAILED and result.read_result(output_dir) is None:
            error = job_return._return_value  # the exception; .return_value would re-raise it
            result.write_result(
                output_dir, status="failed", value=None, error=f"{type(error).__name__}: {error}"
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        written = report.write_report(config.hydra.sweep.dir)
        log.info("Sweep report: %s", written["md"])
