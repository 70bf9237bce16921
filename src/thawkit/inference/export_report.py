"""What `export` leaves beside the model: the int8 twin, `export.json` and `model_card.md`.

`export.json` is the record (scripts read it): the fp32 file and its size and check, with
`quantize=int8` the int8 file, its method and calibration, both accuracies side by side and
whether the drop meets `max_accuracy_drop`, and with `benchmark=true` the latency table.
`model_card.md` is the same record for people, with the run's own numbers
(`thawkit.inference.model_card`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from thawkit.atomic import write_json_atomic
from thawkit.inference.latency import benchmark, format_table
from thawkit.inference.model_card import write_model_card
from thawkit.inference.predict import LoadedModel, load_checkpoint
from thawkit.inference.quantize import quantize_and_compare

log = logging.getLogger(__name__)

QUANTIZE = (None, "int8")
SPLITS = ("val", "test", "auto")


def int8_path(fp32: Path) -> Path:
    """`best.onnx` -> `best.int8.onnx`, beside it."""
    return fp32.with_name(f"{fp32.stem}.int8.onnx")


def check_options(cfg: DictConfig) -> None:
    """Refuse values the export options cannot take, before anything is written."""
    if cfg.quantize not in QUANTIZE:
        raise ValueError(f"quantize={cfg.quantize!r} is not one of: null, int8")
    if cfg.quantize and cfg.format != "onnx":
        raise ValueError(f"quantize=int8 needs format=onnx (got format={cfg.format})")
    if cfg.eval_split not in SPLITS:
        raise ValueError(f"eval_split={cfg.eval_split!r} is not one of {SPLITS}")
    if cfg.calibration_images < 0 or not 0 <= cfg.max_accuracy_drop <= 1:
        raise ValueError(
            f"calibration_images={cfg.calibration_images} must be >= 0 and "
            f"max_accuracy_drop={cfg.max_accuracy_drop} in [0, 1]"
        )
    if cfg.benchmark and (cfg.bench_runs < 1 or any(b < 1 for b in cfg.bench_batch_sizes)):
        raise ValueError("bench_runs and every bench_batch_sizes entry must be >= 1")


def finish_export(
    cfg: DictConfig, result: dict[str, Any], model: LoadedModel | None = None
) -> dict[str, Any]:
    """Quantize, benchmark (as `cfg` asks) and write export.json and model_card.md beside the
    exported file `result["path"]`; returns the export record."""
    model = model or load_checkpoint(cfg.ckpt, "cpu")
    path = Path(result["path"])
    record: dict[str, Any] = {
        "ckpt": str(model.path),
        "format": result["format"],
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "max_abs_diff": result["max_abs_diff"],
        "class_names": model.class_names,
        "image_size": model.image_size,
    }
    onnx_files = {"onnx_fp32": path} if result["format"] == "onnx" else {}
    if cfg.quantize == "int8":
        int8 = int8_path(path)
        record["int8"] = quantize_and_compare(
            model, path, int8, cfg.calibration_images, cfg.data_root, cfg.eval_split,
            cfg.max_accuracy_drop, cfg.seed,
        )  # fmt: skip
        record["size_ratio_int8"] = record["int8"]["size_bytes"] / record["size_bytes"]
        onnx_files["onnx_int8"] = int8
    if cfg.benchmark:
        # The module's own forward, as predict runs it: what the export traced.
        record["benchmark"] = benchmark(
            model.module, onnx_files, model.image_size, list(cfg.bench_batch_sizes),
            cfg.bench_runs, cfg.bench_warmup, cfg.bench_threads,
        )  # fmt: skip
        log.info("%s", format_table(record["benchmark"]))
    json_path = path.parent / "export.json"
    write_json_atomic(json_path, record)
    card = write_model_card(model, record, path.parent / "model_card.md")
    record["files"] = {"export_json": str(json_path), "model_card": str(card)}
    return record


def summary_lines(record: dict[str, Any]) -> list[str]:
    """What the command prints about the int8 model (the log has shown the latency table)."""
    lines = []
    q = record.get("int8")
    if q:
        size = f"{q['size_bytes'] / 1e6:.2f} MB vs {record['size_bytes'] / 1e6:.2f} MB fp32"
        if q.get("accuracy_int8") is not None:
            ok = "meets" if q["meets_max_accuracy_drop"] else "EXCEEDS"
            lines.append(
                f"Wrote {q['path']} (int8 {q['method']}, {size}); {q['eval_split']} accuracy "
                f"fp32 {q['accuracy_fp32']:.4f}, int8 {q['accuracy_int8']:.4f}: drop "
                f"{q['accuracy_drop']:.4f} {ok} max_accuracy_drop={q['max_accuracy_drop']}"
            )
        else:
            lines.append(f"Wrote {q['path']} (int8 {q['method']}, {size}); accuracy not measured")
    lines.append(f"Wrote {record['files']['export_json']} and {record['files']['model_card']}")
    return lines
