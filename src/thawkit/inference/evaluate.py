"""Evaluate a checkpoint on an image folder: `python evaluate.py ckpt=PATH [data.root=...]`.

Writes to the output dir: `metrics.json` (accuracy, loss, macro and per-class precision,
recall and F1, confusion matrix), `report.txt` (the per-class report), `predictions.csv`
(every image: true, predicted, confidence, loss), `confusion_matrix.png` and `top_losses.png`
(the most confidently wrong images first).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from thawkit.config import schema as _schema  # noqa: F401 - registers its config schema
from thawkit.data import folder
from thawkit.data.digits import export_digits
from thawkit.data.exclude import ExcludeError, listed_files
from thawkit.data.file_policy import log_skipped
from thawkit.finetune.calibration import expected_calibration_error
from thawkit.inference.outputs import output_path
from thawkit.inference.predict import LoadedModel, load_checkpoint, predict_probabilities
from thawkit.inference.tta import resolve_views
from thawkit.reporting.mistakes import top_losses_figure
from thawkit.reporting.plots import confusion_figure, save_png
from thawkit.textio import bytes_safe_streams, open_text

log = logging.getLogger(__name__)

SPLITS = ("auto", "train", "val", "test", "all")


def training_root(model: LoadedModel) -> Path | None:
    """The image folder the checkpoint was trained on, as recorded in it."""
    data = model.data
    if data.get("root"):
        return Path(data["root"]).expanduser()
    if data.get("digits_root"):
        return export_digits(data["digits_root"])  # the default dataset, exported once
    return None


def select_samples(
    model: LoadedModel,
    root: str | os.PathLike | None = None,
    split: str = "auto",
    skipped: dict[str, str] | None = None,
    exclude: str | os.PathLike | None = "auto",
    excluded: dict[str, Any] | None = None,
) -> tuple[Path, str, list[folder.Sample]]:
    """Images to evaluate, labelled with the checkpoint's class indices.

    Args:
        model: the loaded checkpoint.
        root: an image folder; None = the one the checkpoint was trained on.
        split: `train`, `val`, `test`, `all` (every image under root), or `auto`: the test
            split if there is one, else the validation split. On a folder other than the
            training one that has no `train/` layout, `auto` means `all`.
        skipped: receives what training's file policy left out ({path: reason}).
        exclude: files to leave out (`thawkit.data.exclude`: an audit.json or a text list);
            `auto` = the list the checkpoint was trained with (data.exclude), on its own folder
            only; None = none.
        excluded: receives what `exclude` left out (source, count, files).

    Returns:
        The root, the split used and the (path, label) samples.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    trained_on = training_root(model)
    if root is None:
        if trained_on is None:
            raise folder.DataError(
                f"{model.path} does not record its image folder: pass data.root=FOLDER"
            )
        root = trained_on
    root = Path(root).expanduser()
    same = trained_on is not None and root.resolve() == trained_on.resolve()
    data = model.data if same else {}
    # The training run's fractions and seed reproduce its val/test split of a flat folder.
    names, splits = folder.discover(
        root,
        data.get("val_fraction") or 0.15,
        data.get("test_fraction") or 0.0,
        data.get("seed") or 0,
        min_classes=1,
        skipped=skipped,
    )
    unknown = sorted(set(names) - set(model.class_names))
    if unknown:
        raise folder.DataError(
            f"{root} has class folders {unknown} that the checkpoint does not know; its classes "
            f"are {model.class_names}. Point data.root at a folder of those class folders."
        )
    if split == "auto":
        split = (
            "all"
            if not same and not (root / "train").is_dir()
            else "test"
            if "test" in splits
            else "val"
        )
    if split == "all":
        samples = [s for part in splits.values() for s in part]
    elif split in splits:
        samples = splits[split]
    else:
        raise folder.DataError(
            f"{root} has no {split} split; it has {sorted(splits)}. Set split=..."
        )
    samples = _without_excluded(
        samples, splits, root, exclude, model.data if same else {}, excluded
    )
    to_ckpt = [model.class_names.index(n) for n in names]
    return root, split, [(path, to_ckpt[label]) for path, label in samples]


def _without_excluded(
    samples: list[folder.Sample],
    splits: dict[str, list[folder.Sample]],
    root: Path,
    exclude: str | os.PathLike | None,
    trained: dict[str, Any],
    excluded: dict[str, Any] | None,
) -> list[folder.Sample]:
    """`samples` less the files `exclude` lists (a list the run trained without stays out of its
    test split too: an audit's leaked or duplicated copies would otherwise inflate the score)."""
    source = trained.get("exclude") if exclude == "auto" else exclude
    if not source:
        return samples
    try:
        wanted = listed_files(splits, source, root)
    except ExcludeError as e:
        if exclude != "auto":
            raise
        raise ExcludeError(
            f"The checkpoint was trained with data.exclude={source}, which evaluate applies "
            f"too, and it cannot be used now: {e}\nRestore the list, or pass "
            "data.exclude=null to evaluate every image."
        ) from e
    kept = [s for s in samples if os.path.realpath(s[0]) not in wanted]
    gone = [p for p, _ in samples if os.path.realpath(p) in wanted]
    log.info("data.exclude: %d image(s) of this split left out (%s)", len(gone), source)
    if excluded is not None:
        excluded.update({"source": str(source), "count": len(gone), "files": gone})
    return kept


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> dict[str, Any]:
    """Accuracy, cross-entropy, macro and per-class precision/recall/F1, confusion matrix."""
    preds = probs.argmax(axis=1)
    everyone = list(range(len(class_names)))
    present = sorted(set(labels.tolist()))  # macro averages over the classes evaluated
    p, r, f, support = precision_recall_fscore_support(
        labels, preds, labels=everyone, zero_division=0
    )
    macro = precision_recall_fscore_support(
        labels, preds, labels=present, average="macro", zero_division=0
    )
    true_prob = probs[np.arange(len(labels)), labels]
    return {
        "num_images": int(len(labels)),
        "acc": float((preds == labels).mean()),
        "loss": float(-np.log(np.clip(true_prob, 1e-12, 1.0)).mean()),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(labels, preds, labels=everyone).tolist(),
    }


def evaluation_report(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> str:
    """scikit-learn's per-class report over the classes evaluated, so that its macro average is
    `metrics.json`'s; a line names the classes without images."""
    present = sorted(set(labels.tolist()))
    report = classification_report(
        labels,
        probs.argmax(axis=1),
        labels=present,
        target_names=[class_names[i] for i in present],
        digits=3,
        zero_division=0,
    )
    absent = [c for i, c in enumerate(class_names) if i not in present]
    if absent:
        report += f"\nNot evaluated (no images in this split, left out of the averages): {absent}\n"
    return report


def default_output_dir(model: LoadedModel, root: Path, split: str) -> Path:
    return model.run_dir / "eval" / f"{root.resolve().name}-{split}"


def evaluate(
    ckpt: str | os.PathLike,
    root: str | os.PathLike | None = None,
    split: str = "auto",
    output_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    top_losses: int = 16,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
    tta: str | Sequence[str] = "none",
    exclude: str | os.PathLike | None = "auto",
) -> dict[str, Any]:
    """Evaluate a checkpoint and write metrics, report, predictions and figures.

    Args:
        ckpt: a thawkit checkpoint.
        root: image folder (class folders, or train/val/test of class folders); None = the
            folder the checkpoint was trained on.
        split: see `select_samples`.
        output_dir: where results go; None = `<run dir>/eval/<folder>-<split>` (numbered
            `-2`, `-3` when taken: `thawkit.inference.outputs`).
        batch_size, num_workers: DataLoader settings.
        top_losses: images in the top-losses grid.
        device: `auto`, `cpu` or `cuda`.
        progress: show a progress bar.
        overwrite: write into an `output_dir` that holds an earlier result (else refused).
        tta: test-time augmentation views (`thawkit.inference.tta`): none, flip, five_crop, a list.
        exclude: files left out, see `select_samples` (`auto`: those the run trained without).

    Returns:
        The metrics written to `metrics.json`, with `output_dir` and the files written.
    """
    resolve_views(tta)  # a mistyped view fails before the model loads
    model = load_checkpoint(ckpt, device)
    ignored: dict[str, str] = {}  # what training's file policy leaves out
    excluded: dict[str, Any] = {}  # what data.exclude leaves out
    root, split, samples = select_samples(model, root, split, ignored, exclude, excluded)
    log_skipped(ignored)
    default = default_output_dir(model, root, split)
    out = output_path(output_dir, default, "output_dir", overwrite, folder=True)
    if not samples:
        raise folder.DataError(f"No images to evaluate in the {split} split of {root}")
    paths = [Path(p) for p, _ in samples]
    probs_t, errors = predict_probabilities(model, paths, batch_size, num_workers, progress, tta)
    unreadable = {str(p): e for p, e in zip(paths, errors, strict=True) if e}
    for p, e in unreadable.items():
        log.warning("Skipping unreadable image %s (%s)", p, e)
    skipped = {**ignored, **unreadable}
    keep = [i for i, e in enumerate(errors) if not e]
    if not keep:
        raise folder.DataError(f"None of the {len(paths)} images under {root} could be read")
    labels = np.array([samples[i][1] for i in keep])
    probs = probs_t[keep].double().numpy()
    kept_paths = [str(paths[i]) for i in keep]
    names = model.class_names

    missing = folder.classes_without_images(names, [("", y) for y in labels])
    folder.warn_classes_without_images(split, missing)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "ckpt": str(model.path),
        "data_root": str(root),
        "split": split,
        "class_names": names,
        **classification_metrics(labels, probs, names),
        # Probabilities are the calibrated ones (the checkpoint's temperature), over the views.
        "temperature": float(model.module.temperature),
        "ece": expected_calibration_error(torch.from_numpy(probs), torch.from_numpy(labels)),
        "tta": list(resolve_views(tta)),
        "skipped_files": skipped,
        "excluded_files": excluded or None,
        "classes_without_images": missing,
    }
    report = evaluation_report(labels, probs, names)
    (out / "report.txt").write_text(report)
    _write_predictions(out / "predictions.csv", kept_paths, labels, probs, names)
    fig = confusion_figure(metrics["confusion_matrix"], names, f"{root.name} ({split})")
    files = {"confusion_matrix": save_png(fig, out / "confusion_matrix.png")}
    if top_losses > 0:
        fig, _ = top_losses_figure(kept_paths, labels, probs, names, top_losses)
        files["top_losses"] = save_png(fig, out / "top_losses.png")
    files.update(
        {
            "metrics": out / "metrics.json",
            "report": out / "report.txt",
            "predictions": out / "predictions.csv",
        }
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    metrics["report"] = report
    metrics["files"] = {k: str(v) for k, v in files.items()}
    return metrics


def _write_predictions(
    path: Path, paths: list[str], labels: np.ndarray, probs: np.ndarray, names: list[str]
) -> None:
    preds = probs.argmax(axis=1)
    with open_text(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "true", "predicted", "confidence", "prob_true", "loss", "correct"])
        for i, p in enumerate(paths):
            true_prob = probs[i, labels[i]]
            writer.writerow(
                [
                    p,
                    names[labels[i]],
                    names[preds[i]],
                    f"{probs[i, preds[i]]:.6f}",
                    f"{true_prob:.6f}",
                    f"{-np.log(max(true_prob, 1e-12)):.6f}",
                    int(preds[i] == labels[i]),
                ]
            )


def main(cfg: DictConfig) -> dict[str, Any]:
    """The `evaluate.py` entry (conf/evaluate.yaml): evaluate, print the report, write files."""
    bytes_safe_streams()
    metrics = evaluate(
        cfg.ckpt,
        root=cfg.data.root,
        split=cfg.split,
        output_dir=cfg.output_dir,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        top_losses=cfg.top_losses,
        device=cfg.device,
        progress=cfg.progress,
        overwrite=cfg.overwrite,
        tta=cfg.tta,
        exclude=cfg.data.exclude,
    )
    print(f"{metrics['data_root']} ({metrics['split']}): {metrics['num_images']} images")
    print(metrics["report"])
    print(
        f"accuracy {metrics['acc']:.4f}  loss {metrics['loss']:.4f}  "
        f"macro F1 {metrics['f1_macro']:.4f}"
    )
    for name, file in metrics["files"].items():
        print(f"{name}: {file}")
    return metrics
