"""How a run ended, as summary.json and result.json record it."""

from __future__ import annotations

import signal
import traceback
from pathlib import Path

from lightning.pytorch.utilities.exceptions import SIGTERMException


class RunInterrupted(SystemExit):
    """The run stopped on Ctrl-C or SIGTERM after saving `last.ckpt` (exit code 128 + signal)."""

    def __init__(self, signum: int, epoch: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(128 + signum)
        self.signal = signal.Signals(signum).name
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint

    def __str__(self) -> str:
        saved = f"saved {self.checkpoint}" if self.checkpoint else "no checkpoint saved"
        return f"{self.signal} at epoch {self.epoch}, step {self.step}: {saved}"


def run_status(exception: BaseException) -> tuple[str, str | None]:
    """(`status`, `error`) of summary.json for a run that ended with `exception`."""
    if isinstance(exception, (RunInterrupted, KeyboardInterrupt, SIGTERMException)):
        return "interrupted", str(exception) or type(exception).__name__
    text = "".join(traceback.format_exception_only(type(exception), exception)).strip()
    return "failed", text
