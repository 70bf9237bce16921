"""Checks that take milliseconds, run before the image scan (which may take minutes)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from thawkit.inference.teacher import check_teacher_path
from thawkit.models.weights import check_weights_source
from thawkit.reporting.trackers import check_loggers
from thawkit.run.rundir import RunDirError


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """The run dir can be created and written to."""
    path = Path(output_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise RunDirError(
            f"The run dir {path} is not writable ({e.strerror or e}). Point hydra.run.dir "
            "(or paths.output_dir) at a folder you can write to."
        ) from e


def preflight(cfg: DictConfig) -> None:
    """The weights (and teacher) files exist, the run dir is writable, the loggers can start:
    fail now, not after the scan."""
    check_weights_source(str(cfg.model.weights))
    teacher = OmegaConf.select(cfg, "distill.teacher")  # absent in configs of older versions
    if teacher:
        check_teacher_path(teacher)
    check_output_dir(cfg.paths.output_dir)
    check_loggers(cfg)  # packages installed, tracking server answering
