"""Process start: what a training run imports (docs/architecture.md, "Process start").

The optional packages of other commands and extras (export, serve, audit, trackers, the Hydra
plugins) are imported inside the functions that need them, never by the modules a plain
`thawkit train` loads; timm comes without the W&B client it would import for its own scripts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Optional packages a plain training run does not need (pyproject.toml's extras).
OPTIONAL = [
    "wandb", "mlflow", "onnx", "onnxruntime", "onnxscript", "cleanlab", "fastapi", "uvicorn",
    "pytorch_grad_cam", "sklearn", "skimage", "optuna", "submitit", "pandas",
]  # fmt: skip


SRC = Path(__file__).resolve().parents[1] / "src"  # this checkout's package, not an install


def _imported_by(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300,
        env=env,
    )  # fmt: skip
    return {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}


@pytest.mark.parametrize("module", ["thawkit.cli", "thawkit.run.entry", "thawkit.run.train"])
def test_a_training_run_imports_no_optional_package(module: str) -> None:
    installed = [name for name in OPTIONAL if importlib.util.find_spec(name) is not None]
    assert "wandb" in installed  # the venv has the extras: the check below means something
    loaded = _imported_by(f"import {module}")
    assert "thawkit" in loaded
    assert not loaded & set(installed), f"{module} imports {sorted(loaded & set(installed))}"


def test_timm_loads_without_wandb_which_still_imports_later() -> None:
    loaded = _imported_by(
        "from thawkit.models.timm_import import timm\n"
        "assert 'wandb' not in __import__('sys').modules\n"
        "assert timm.is_model('resnet18')\n"
        "import wandb\n"
        "assert wandb.__name__ == 'wandb'"
    )
    assert {"timm", "wandb"} <= loaded
