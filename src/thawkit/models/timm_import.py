"""timm, imported without the W&B client that timm imports for its own training scripts.

`import timm` runs `timm.utils.summary`, which tries `import wandb` for `update_summary(...,
log_wandb=True)` of timm's training scripts; thawkit never calls it. With wandb installed (the
`thawkit[trackers]` extra) that one import cost 0.3-0.5 s of every process start on a 2-core
machine (docs/architecture.md, "Process start"). `load_timm` hides wandb while timm loads and
only then; thawkit's W&B logger (`logger=wandb`, thawkit.reporting.trackers) imports it as usual.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def load_timm() -> ModuleType:
    """`import timm`; wandb, if not imported yet, stays unimported (see the module docstring)."""
    if "timm" in sys.modules or "wandb" in sys.modules:
        return importlib.import_module("timm")
    sys.modules["wandb"] = None  # type: ignore[assignment]  # `import wandb` raises ImportError
    try:
        return importlib.import_module("timm")
    finally:
        if sys.modules.get("wandb", 0) is None:
            del sys.modules["wandb"]


timm = load_timm()
