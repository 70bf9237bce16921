"""`result.json`: the few numbers of one job that a sweep report reads, written for every job.

Written even when the job failed (with its error), so a sweep report lists every job.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from thawkit.atomic import write_json_atomic

RESULT_FILE = "result.json"


def write_result(output_dir: str | Path, **fields: Any) -> Path:
    """Write `result.json` in `output_dir` (NaN values are stored as null)."""
    path = Path(output_dir) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in fields.items()}
    clean.setdefault("torch_threads", torch.get_num_threads())
    write_json_atomic(path, clean)
    return path


def read_result(output_dir: str | Path) -> dict[str, Any] | None:
    path = Path(output_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None
