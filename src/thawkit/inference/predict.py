"""Class predictions for images from a checkpoint alone: `python predict.py ckpt=PATH input=...`.

A thawkit checkpoint carries everything inference needs: the architecture and class names (the
module's hyperparameters), the trained weights (the state dict), the backbone's preprocessing
and the training image size (`checkpoint["thawkit"]`). No training config, no weights source.
"""

from __future__ import annotations

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
from thawkit.inference.predictions import Prediction, format_prediction, rank, write_csv
from thawkit.inference.tta import input_side, resolve_views, tta_logits, tta_transform
from thawkit.models.backbone import Preprocessing
from thawkit.textio import bytes_safe_streams

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
            "output": "logits (N, num_classes), already divided by the temperature; softmax "
            "over dim 1 gives the calibrated class probabilities",
            "temperature": float(self.module.temperature),
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
    tta: str | Sequence[str] = "none",
) -> tuple[torch.Tensor, list[str]]:
    """Calibrated class probabilities (N, C) of image files, and an error text per file ('' if it
    decoded): softmax of the logits divided by the checkpoint's temperature, averaged over the
    `tta` views (`thawkit.inference.tta`).

    Unreadable files get a row of NaN probabilities.
    """
    views = resolve_views(tta)
    transform = tta_transform(model.preprocessing, model.image_size, views)
    dataset = _Images(paths, transform, input_side(model.preprocessing, model.image_size, views))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    device = next(model.module.parameters()).device
    probs, errors = [], []
    batches = track(loader, description="Predicting", disable=not progress, transient=True)
    for x, errs in batches:
        logits = tta_logits(model.module.calibrated_logits, x.to(device), views, model.image_size)
        p = logits.float().softmax(dim=1).cpu()
        bad = torch.tensor([bool(e) for e in errs])
        p[bad] = float("nan")
        probs.append(p)
        errors += list(errs)
    return torch.cat(probs), errors


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
    tta: str | Sequence[str] = "none",
    min_confidence: float = 0.0,
    explain: bool = False,
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
        tta: test-time augmentation views (`thawkit.inference.tta`): none, flip, five_crop, a list.
        min_confidence: rows whose top probability is below it are labelled `uncertain`.
        explain: write Grad-CAM overlays of the top class to `<csv stem>-explain/` beside the
            CSV (`thawkit.inference.explain`).

    Returns:
        The predictions and the CSV path.
    """
    if top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence={min_confidence} must be in [0, 1] (0 = off)")
    resolve_views(tta)  # a mistyped view fails before the model loads
    model = load_checkpoint(ckpt, device)
    name = Path(source).expanduser().resolve().name or "input"
    default = model.run_dir / "predictions" / f"{Path(name).stem}.csv"
    csv_path = output_path(output, default, "output", overwrite)
    paths = find_images(source)
    probs, errors = predict_probabilities(model, paths, batch_size, num_workers, progress, tta)
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
    predictions = rank(probs, model.class_names, paths, errors, k, min_confidence)
    csv_path = write_csv(predictions, k, csv_path, label=min_confidence > 0)
    if explain:
        from thawkit.inference.explain import write_overlays  # grad-cam loads only when asked

        write_overlays(model, predictions, csv_path.with_name(f"{csv_path.stem}-explain"), source)
    return predictions, csv_path


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
        tta=cfg.tta,
        min_confidence=cfg.min_confidence,
        explain=cfg.explain,
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
