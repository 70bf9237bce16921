"""Class predictions for images from a checkpoint alone: `python predict.py ckpt=PATH input=...`.

A thawkit checkpoint carries everything inference needs: the architecture and class names (the
module's hyperparameters), the trained weights (the state dict), the backbone's preprocessing
and the training image size (`checkpoint["thawkit"]`). No training config, no weights source.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from thawkit.config import schema as _schema  # noqa: F401 - registers its config schema
from thawkit.console import quiet_loggers
from thawkit.data.file_policy import IMG_EXTENSIONS, log_skipped, scan_images
from thawkit.data.folder import DataError, load_rgb
from thawkit.data.transforms import as_preprocessing, eval_resize, eval_transform
from thawkit.finetune.module import FineTuneModule
from thawkit.inference.outputs import output_path
from thawkit.models.backbone import Preprocessing
from thawkit.textio import bytes_safe_streams, open_text

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """The checkpoint cannot be used for inference; the message names the problem and the fix."""


@dataclass
class LoadedModel:
    """A trained module in eval mode and what its inputs must look like."""

    module: FineTuneModule
    class_names: list[str]
    preprocessing: Preprocessing
    image_size: int
    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def transform(self) -> Any:
        """The evaluation transform the model was validated with (PIL RGB -> normalised tensor)."""
        return eval_transform(self.preprocessing, self.image_size)

    @property
    def run_dir(self) -> Path:
        """The training run's dir (`<run>/checkpoints/x.ckpt` -> `<run>`), else the ckpt's dir."""
        parent = self.path.parent
        return parent.parent if parent.name == "checkpoints" else parent

    def metadata(self) -> dict[str, Any]:
        """What a deployed copy of the model needs besides its weights."""
        hp = self.module.hparams
        pre = self.preprocessing.to_dict()
        return {
            "class_names": self.class_names,
            "num_classes": len(self.class_names),
            "backbone": hp.backbone,
            "image_size": self.image_size,
            "preprocessing": {
                **pre,
                "resize": eval_resize(self.image_size, self.preprocessing.crop_pct),
            },
            "input": "float32 NCHW RGB: resize the shorter side to preprocessing.resize "
            "(interpolation), centre-crop image_size, scale to [0, 1], then (x - mean) / std",
            "output": "logits (N, num_classes); softmax over dim 1 gives class probabilities",
        }


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` = the first CUDA GPU if there is one, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a thawkit checkpoint for inference (no config, no pretrained-weights source).

    Args:
        path: a `.ckpt` written by a thawkit training run.
        device: where the module goes (`cpu`, `cuda`, `auto`).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"ckpt={path} does not exist. Pass a checkpoint of a training run, e.g. "
            "ckpt=outputs/<date>/<time>-<strategy>/checkpoints/best.ckpt"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    meta = ckpt.get("thawkit")
    if "hyper_parameters" not in ckpt or "state_dict" not in ckpt or not meta:
        raise CheckpointError(
            f"{path} is not a thawkit checkpoint (no hyper_parameters/state_dict/thawkit entry). "
            "Use the best.ckpt or last.ckpt of a thawkit run."
        )
    pre = as_preprocessing(meta["preprocessing"])
    image_size = meta.get("image_size")
    if image_size is None:
        image_size = pre.input_size
        log.warning(
            "%s records no training image size; using the backbone's %d px", path, image_size
        )
    # weights="none": the state dict brings the trained weights, no pretrained source needed,
    # and the weights module's "random initialisation" notice would only mislead here.
    with quiet_loggers("thawkit.models.weights"):
        module = FineTuneModule.load_from_checkpoint(path, map_location="cpu", weights="none")
    module.eval().to(resolve_device(device) if isinstance(device, str) else device)
    loaded = LoadedModel(
        module=module,
        class_names=list(module.hparams.class_names),
        preprocessing=pre,
        image_size=int(image_size),
        path=path,
        data=dict(meta.get("data") or {}),
    )
    log.info(
        "Loaded %s: %s, %d classes, %d px inputs",
        path,
        module.hparams.backbone,
        len(loaded.class_names),
        loaded.image_size,
    )
    return loaded


def find_images(source: str | os.PathLike) -> list[Path]:
    """One image file, or every image file under a folder (recursively, sorted).

    A folder is read by training's file policy (`thawkit.data.file_policy`): hidden and NAS
    folders, AppleDouble `._x.jpg` files and dangling symlinks are left out, each named in the
    log.
    """
    source = Path(source).expanduser()
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"input={source} is neither an image file nor a folder")
    files, skipped = scan_images(source)
    log_skipped(skipped)
    if not files:
        raise FileNotFoundError(
            f"input={source} holds no image files ({', '.join(IMG_EXTENSIONS)})"
        )
    return files


class _Images(Dataset):
    """Decoded, transformed images; an unreadable file yields an error text instead of failing."""

    def __init__(self, paths: Sequence[Path], transform: Any, size: int) -> None:
        self.paths, self.transform, self.size = list(paths), transform, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        try:
            return self.transform(load_rgb(self.paths[i])), ""
        except Exception as e:  # PIL raises many types for broken files
            return torch.zeros(3, self.size, self.size), f"{type(e).__name__}: {e}"


@torch.no_grad()
def predict_probabilities(
    model: LoadedModel,
    paths: Sequence[Path],
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, list[str]]:
    """Class probabilities (N, C) of image files, and an error text per file ('' if it decoded).

    Unreadable files get a row of NaN probabilities.
    """
    dataset = _Images(paths, model.transform, model.image_size)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    device = next(model.module.parameters()).device
    probs, errors = [], []
    batches = track(loader, description="Predicting", disable=not progress, transient=True)
    for x, errs in batches:
        p = model.module(x.to(device)).float().softmax(dim=1).cpu()
        bad = torch.tensor([bool(e) for e in errs])
        p[bad] = float("nan")
        probs.append(p)
        errors += list(errs)
    return torch.cat(probs), errors


@dataclass
class Prediction:
    """Top-k classes and probabilities of one image."""

    path: str
    classes: list[str]
    probabilities: list[float]
    error: str = ""


def rank(
    probs: torch.Tensor,
    class_names: Sequence[str],
    paths: Sequence[Path],
    errors: Sequence[str],
    k: int,
) -> list[Prediction]:
    """The k most probable classes of every image."""
    k = min(k, len(class_names))
    values, indices = probs.nan_to_num(-1.0).topk(k, dim=1)
    out = []
    for path, vals, idx, err in zip(paths, values.tolist(), indices.tolist(), errors, strict=True):
        if err:
            out.append(Prediction(str(path), [], [], err))
        else:
            out.append(Prediction(str(path), [class_names[i] for i in idx], vals))
    return out


def write_csv(predictions: Sequence[Prediction], k: int, path: str | os.PathLike) -> Path:
    """CSV with columns path, class_1, prob_1, ..., class_k, prob_k, error.

    File names keep their own bytes, also those that are not UTF-8 (`thawkit.textio`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_text(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["path"] + [c for r in range(1, k + 1) for c in (f"class_{r}", f"prob_{r}")] + ["error"]
        )
        for p in predictions:
            ranked = [
                v
                for c, pr in zip(p.classes, p.probabilities, strict=True)
                for v in (c, f"{pr:.6f}")
            ]
            writer.writerow([p.path] + ranked + [""] * (2 * k - len(ranked)) + [p.error])
    return path


def predict(
    ckpt: str | os.PathLike,
    source: str | os.PathLike,
    top_k: int = 3,
    output: str | os.PathLike | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
) -> tuple[list[Prediction], Path]:
    """Predict the classes of an image or of every image under a folder; write a CSV.

    Args:
        ckpt: a thawkit checkpoint.
        source: an image file or a folder of images (searched recursively).
        top_k: classes reported per image.
        output: the CSV; None = `<run dir>/predictions/<input name>.csv` (numbered `-2`, `-3`
            when taken: `thawkit.inference.outputs`).
        batch_size, num_workers: DataLoader settings.
        device: `auto`, `cpu` or `cuda`.
        progress: show a progress bar.
        overwrite: replace an existing `output` (else it is refused).

    Returns:
        The predictions and the CSV path.
    """
    if top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1")
    model = load_checkpoint(ckpt, device)
    name = Path(source).expanduser().resolve().name or "input"
    default = model.run_dir / "predictions" / f"{Path(name).stem}.csv"
    csv_path = output_path(output, default, "output", overwrite)
    paths = find_images(source)
    probs, errors = predict_probabilities(model, paths, batch_size, num_workers, progress)
    for path, err in zip(paths, errors, strict=True):
        if err:
            log.warning("Skipping unreadable image %s (%s)", path, err)
    if all(errors):
        listing = "\n".join(f"  {p}: {e}" for p, e in list(zip(paths, errors, strict=True))[:10])
        raise DataError(
            f"None of the {len(paths)} image file(s) of input={source} could be read, so "
            f"nothing was predicted:\n{listing}\nReplace or convert them (see the warnings)."
        )
    k = min(top_k, len(model.class_names))
    predictions = rank(probs, model.class_names, paths, errors, k)
    return predictions, write_csv(predictions, k, csv_path)


def format_prediction(p: Prediction) -> str:
    """`path: daisy 0.931 | tulip 0.052 | rose 0.011`."""
    if p.error:
        return f"{p.path}: unreadable ({p.error})"
    ranked = " | ".join(f"{c} {pr:.3f}" for c, pr in zip(p.classes, p.probabilities, strict=True))
    return f"{p.path}: {ranked}"


def main(cfg: DictConfig) -> list[Prediction]:
    """The `predict.py` entry (src/thawkit/conf/predict.yaml): predict, print, write the CSV.

    Raises (the command exits non-zero) when no image was found or none could be read.
    """
    bytes_safe_streams()
    predictions, csv_path = predict(
        cfg.ckpt,
        cfg.input,
        top_k=cfg.top_k,
        output=cfg.output,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        device=cfg.device,
        progress=cfg.progress,
        overwrite=cfg.overwrite,
    )
    shown = predictions[: cfg.show] if cfg.show >= 0 else predictions
    for p in shown:
        print(format_prediction(p))
    if len(shown) < len(predictions):
        print(f"... {len(predictions) - len(shown)} more in the CSV")
    unreadable = sum(1 for p in predictions if p.error)
    if unreadable:
        log.warning(
            "%d of %d file(s) could not be read; the CSV lists each with its error",
            unreadable,
            len(predictions),
        )
    rows = f" and {unreadable} unreadable file(s)" if unreadable else ""
    print(f"Wrote {len(predictions) - unreadable} predictions{rows} to {csv_path}")
    return predictions
