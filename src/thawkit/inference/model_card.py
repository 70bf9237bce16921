"""`model_card.md` beside every export: what the model is, how well it does, what it is not for.

Every number comes from the run's own records, never typed again: `summary.json` (data,
metrics, diagnosis, calibration), `.hydra/config.yaml` and `.hydra/overrides.yaml` (settings and
the command that reproduces the run), the checkpoint (backbone, hyperparameters) and the
export's own record (`export.json`: sizes, the int8 cost, latency). What a record lacks is said
to be missing rather than guessed.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

import yaml

from thawkit.inference.latency import format_table
from thawkit.inference.predict import LoadedModel

log = logging.getLogger(__name__)

FEW_IMAGES = 20  # a class with fewer training images than this is named as a known limit


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _get(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def reproduce_command(run_dir: Path) -> str | None:
    """`python train.py` with the run's command-line overrides (`.hydra/overrides.yaml`)."""
    overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml")
    if overrides is None:
        return None
    return shlex.join(["python", "train.py", *map(str, overrides)])


def recall_from_matrix(matrix: list[list[int]], names: list[str]) -> dict[str, float | None]:
    """Per-class recall from a confusion matrix (rows: true class)."""
    return {
        n: (row[i] / sum(row) if sum(row) else None)
        for i, (n, row) in enumerate(zip(names, matrix, strict=False))
    }


def _metrics_section(summary: dict[str, Any], names: list[str]) -> list[str]:
    best = summary.get("best") or {}
    test = summary.get("test") or {}
    epoch = best.get("epoch")
    history = {h.get("epoch"): h for h in summary.get("history") or []}
    val_recall = (history.get(epoch) or {}).get("val/recall_per_class") or {}
    test_matrix = _get(summary, "confusion_matrix.test.matrix")
    test_recall = recall_from_matrix(test_matrix, names) if test_matrix else {}
    lines = ["## Metrics", ""]
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in best.items() if k != "epoch")
    lines.append(f"Best epoch {_fmt(epoch)} (the checkpoint's): {shown}")
    lines.append("")
    if test:
        lines += ["Test split: " + ", ".join(f"{k} {_fmt(v)}" for k, v in test.items()), ""]
    else:
        lines += ["No test split was scored: the validation numbers are the only estimate.", ""]
    lines += ["| class | val recall | test recall |", "|---|---|---|"]
    for n in names:
        lines.append(f"| {n} | {_fmt(val_recall.get(n))} | {_fmt(test_recall.get(n))} |")
    return lines


def _calibration_section(summary: dict[str, Any]) -> list[str]:
    calib = summary.get("calibration")
    if not calib:
        return [
            "## Calibration",
            "",
            "Not measured for this run (probabilities are the raw softmax).",
        ]
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in calib.items() if not isinstance(v, (dict, list)))
    return ["## Calibration", "", shown]


def _int8_section(export: dict[str, Any]) -> list[str]:
    lines = ["## Export", ""]
    lines.append(
        f"- {export.get('format', 'onnx')} fp32: `{Path(export['path']).name}`, "
        f"{export.get('size_bytes', 0) / 1e6:.2f} MB"
    )
    q = export.get("int8")
    if q:
        lines.append(
            f"- int8 ({q['method']}, calibrated on {q['calibration']}): "
            f"`{Path(q['path']).name}`, {q['size_bytes'] / 1e6:.2f} MB"
        )
        if q.get("accuracy_int8") is not None:
            verdict = "within" if q["meets_max_accuracy_drop"] else "ABOVE"
            lines.append(
                f"- int8 cost on the {q['eval_split']} split ({q['eval_images']} images): "
                f"accuracy fp32 {q['accuracy_fp32']:.4f}, int8 {q['accuracy_int8']:.4f}, drop "
                f"{q['accuracy_drop']:.4f} ({verdict} max_accuracy_drop={q['max_accuracy_drop']}); "
                f"top-1 agreement {q['agreement']:.4f}"
            )
        else:
            lines.append("- int8 cost: not measured (no labelled images were found)")
    if export.get("benchmark"):
        lines += ["", format_table(export["benchmark"])]
    return lines


def _limits(summary: dict[str, Any], names: list[str], data_root: str | None) -> list[str]:
    train_counts = _get(summary, "class_counts.train") or {}
    few = [
        f"{n} ({train_counts[n]})" for n in names if train_counts.get(n, FEW_IMAGES) < FEW_IMAGES
    ]
    lines = [
        "## Intended use and known limits",
        "",
        f"- Intended use: sorting images into these {len(names)} classes: "
        + ", ".join(names)
        + ". It always answers one of them: an image of anything else gets "
        "a wrong class, often with confidence.",
        f"- Training data: images from `{data_root or 'unknown'}`; photos from another camera, "
        "light, background or resolution than these may score below the numbers above.",
    ]
    if few:
        lines.append(
            f"- Classes with fewer than {FEW_IMAGES} training images (estimates for "
            f"them are the least reliable): {', '.join(few)}"
        )
    missing = summary.get("classes_without_images") or {}
    if missing:
        lines.append(f"- Splits with classes that had no images: {missing}")
    return lines


def model_card(model: LoadedModel, export: dict[str, Any]) -> str:
    """The card's Markdown for `model` and its export record."""
    run_dir = model.run_dir
    summary = _read_json(run_dir / "summary.json")
    config = _read_yaml(run_dir / ".hydra" / "config.yaml") or {}
    hp = dict(model.module.hparams)
    names = list(model.class_names)
    lines = [f"# Model card: {run_dir.name}", ""]
    if not summary:
        lines += [
            f"{run_dir}/summary.json was not found: only the checkpoint's own record is shown.",
            "",
        ]
    lines += [
        "## Model",
        "",
        f"- Backbone `{hp.get('backbone')}`, pretrained weights: "
        f"`{summary.get('weights', hp.get('weights'))}`",
        f"- Head: {hp.get('head')}",
        f"- Strategy `{summary.get('strategy', '-')}`; lr {hp.get('lr')}, lr_decay "
        f"{hp.get('lr_decay')}, weight_decay {hp.get('weight_decay')}, label_smoothing "
        f"{hp.get('label_smoothing')}, BatchNorm policy {hp.get('bn_policy')}",
        f"- Optimizer `{_get(config, 'optimizer._target_')}`, epochs "
        f"{_get(config, 'trainer.max_epochs')}, batch size {_get(config, 'data.batch_size')}, "
        f"image size {model.image_size} px, seed {summary.get('seed', '-')}",
        f"- Checkpoint: `{model.path}`",
        "",
        "## Data",
        "",
        f"Folder `{model.data.get('root') or model.data.get('digits_root')}`, "
        f"{len(names)} classes.",
        "",
    ]
    counts = summary.get("class_counts") or {}
    if counts:
        splits = list(counts)
        lines += ["| class | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
        for n in names:
            lines.append(f"| {n} | " + " | ".join(_fmt(counts[s].get(n)) for s in splits) + " |")
        lines.append("")
    skipped = summary.get("skipped_files") or {}
    lines += [
        f"Skipped files: {len(skipped)}"
        + "".join(f"\n- `{p}`: {r}" for p, r in list(skipped.items())[:20]),
        "",
    ]
    lines += _metrics_section(summary, names) + [""]
    lines += _calibration_section(summary) + [""]
    lines += ["## Fit diagnosis", "", str(summary.get("diagnosis", "not recorded")), ""]
    lines += _int8_section(export) + [""]
    lines += _limits(summary, names, model.data.get("root")) + [""]
    command = reproduce_command(run_dir)
    lines += ["## Reproduce", ""]
    lines += [f"```bash\n{command}\n```"] if command else ["The run's .hydra/ record is missing."]
    return "\n".join(lines) + "\n"


def write_model_card(model: LoadedModel, export: dict[str, Any], path: Path) -> Path:
    """Write the card to `path` (beside the exported model)."""
    path.write_text(model_card(model, export), encoding="utf-8")
    log.info("Wrote %s", path)
    return path
