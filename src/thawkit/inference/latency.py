"""Latency of one model three ways: PyTorch eager, ONNX fp32, ONNX int8 (`benchmark=true`).

Each (runtime, batch size) is timed on the same random batch: a few warm-up calls first (the
first calls allocate and pick kernels), then `runs` timed calls; the table keeps the median and
the 90th percentile in milliseconds and the images per second at the median. PyTorch and
onnxruntime are given the same number of intra-op threads, stated in the table, so the rows
compare runtimes and not thread counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from thawkit.inference.quantize import INPUT, onnx_session

log = logging.getLogger(__name__)


def time_calls(call: Callable[[], Any], runs: int, warmup: int) -> dict[str, float]:
    """Median and p90 wall time (ms) of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
    }


def benchmark(
    eager: nn.Module,
    onnx_files: dict[str, Path],
    image_size: int,
    batch_sizes: Sequence[int] = (1, 32),
    runs: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time `eager` and each ONNX file (`{"onnx_fp32": path, "onnx_int8": path}`).

    Returns:
        `{"threads", "runs", "warmup", "rows": [{runtime, batch, median_ms, p90_ms,
        images_per_s}]}`.
    """
    threads = threads or torch.get_num_threads()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        sessions = {name: onnx_session(path, threads) for name, path in onnx_files.items()}
        eager = eager.eval()
        for batch in batch_sizes:
            x = torch.randn(
                batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)
            )
            feed = {INPUT: x.numpy()}

            def run_eager(x: torch.Tensor = x) -> Any:
                with torch.inference_mode():
                    return eager(x)

            calls: dict[str, Callable[[], Any]] = {"pytorch_eager": run_eager}
            for name, session in sessions.items():
                calls[name] = lambda s=session, f=feed: s.run(None, f)
            for name, call in calls.items():
                timing = time_calls(call, runs, warmup)
                timing["images_per_s"] = batch * 1000.0 / timing["median_ms"]
                rows.append({"runtime": name, "batch": batch, **timing})
    finally:
        torch.set_num_threads(saved)
    return {"threads": threads, "runs": runs, "warmup": warmup, "rows": rows}


def format_table(result: dict[str, Any]) -> str:
    """The benchmark as a Markdown table (the log prints it, the model card holds it)."""
    lines = [
        f"Latency on this machine ({result['threads']} threads, median and p90 of "
        f"{result['runs']} runs after {result['warmup']} warm-up):",
        "",
        "| runtime | batch | median ms | p90 ms | images/s |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['runtime']} | {r['batch']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r['images_per_s']:.1f} |"
        )
    return "\n".join(lines)
