"""The block a finished training run prints last: what it scored, what it means, what to do next.

```
Result
  best      epoch 7: val/acc 0.9312  val/loss 0.2140  val/f1_macro 0.9301
  test      test/acc 0.9250  test/loss 0.2311  test/f1_macro 0.9248
  diagnosis good fit: ...
            remedy: ...
  run dir   outputs/2026-05-01/10-00-00-gradual
  next      tensorboard --logdir outputs/2026-05-01/10-00-00-gradual/tensorboard
            python predict.py ckpt=outputs/.../checkpoints/best.ckpt input=IMAGE_OR_FOLDER
            python export.py ckpt=outputs/.../checkpoints/best.ckpt format=onnx
```

It is built from the run's `summary.json` (the record every run writes), and the commands are
spelled the way this run was started (`python train.py`, `thawkit train` or
`python -m thawkit.cli train`), so they can be pasted as they are.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from thawkit.run.job import is_multirun

log = logging.getLogger(__name__)


def command(name: str, argv0: str | None = None, main_module: str | None = None) -> list[str]:
    """How to run thawkit's command `name` the way this process was started.

    Args:
        name: `predict`, `export`, `evaluate`, ...
        argv0: the script this process runs (default `sys.argv[0]`).
        main_module: the module run with `python -m` (default: `__main__`'s, if any).
    """
    if argv0 is None:
        argv0 = sys.argv[0]
    if main_module is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        main_module = spec.name if spec is not None else ""
    if main_module == "thawkit.cli":
        return ["python", "-m", "thawkit.cli", name]
    script = Path(argv0)
    if script.name == "train.py":  # the project's root scripts sit side by side
        return ["python", str(script.with_name(f"{name}.py"))]
    return ["thawkit", name]


def _metrics(values: dict[str, Any]) -> str:
    return "  ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in values.items()
        if k != "epoch"
    )


def result_block(run_dir: Path, summary: dict[str, Any], argv0: str | None = None) -> str:
    """The closing block of a run (see the module docstring) from its summary.json."""
    lines = ["Result"]
    best = summary.get("best") or {}
    if best:
        lines.append(f"  best      epoch {best.get('epoch')}: {_metrics(best)}")
    if summary.get("test"):
        lines.append(f"  test      {_metrics(summary['test'])}")
    detail = summary.get("diagnosis_detail") or {}
    if detail.get("verdict"):
        lines.append(f"  diagnosis {detail['verdict']}: {detail.get('reason', '')}")
        if detail.get("remedy"):
            lines.append(f"            remedy: {detail['remedy']}")
    elif summary.get("diagnosis"):
        lines.append(f"  diagnosis {summary['diagnosis']}")
    lines.append(f"  run dir   {run_dir}")
    ckpt = run_dir / str(summary.get("checkpoint") or "checkpoints/best.ckpt")
    quoted = shlex.quote(str(ckpt))
    nexts = [f"tensorboard --logdir {shlex.quote(str(run_dir / 'tensorboard'))}"]
    if ckpt.is_file():
        nexts += [
            shlex.join(command("predict", argv0)) + f" ckpt={quoted} input=IMAGE_OR_FOLDER",
            shlex.join(command("export", argv0)) + f" ckpt={quoted} format=onnx",
        ]
    lines.append(f"  next      {nexts[0]}")
    lines += [f"            {n}" for n in nexts[1:]]
    return "\n".join(lines)


@rank_zero_only
def announce_result(cfg: DictConfig) -> None:
    """Log the result block of a single run that completed (a sweep has its own report)."""
    if is_multirun():
        return
    run_dir = Path(cfg.paths.output_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return  # e.g. a debug run that wrote no summary
    if summary.get("status", "completed") != "completed":
        return
    log.info("%s", result_block(run_dir, summary))
