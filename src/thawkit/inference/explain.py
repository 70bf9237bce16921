"""Why the model said that: Grad-CAM overlays from the maintained `grad-cam` package.

Grad-CAM (Selvaraju et al., 2017) weights the feature maps of one layer by the gradient of a
class's logit with respect to them: the heat map shows where in the image the evidence for the
class sits. The layer is the last layer group of the backbone (`thawkit.models.backbone`), the
deepest feature map before pooling, for timm and torchvision models alike: of the modules whose
parameters all belong to that group, the outermost (a torchvision ResNet's `layer4`, a timm
EfficientNet's last norm-and-activation, a MobileNet's last `features` block).

`grad_cam_overlay(model, image)` is the one call (predict.py's `explain=true` uses it, once per
image); the heat map is of the image as the model sees it (resized and centre-cropped).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from thawkit.data.folder import load_rgb
from thawkit.data.transforms import eval_resize
from thawkit.inference.predictions import Prediction
from thawkit.models.backbone import Backbone

log = logging.getLogger(__name__)


class _Logits(nn.Module):
    """Backbone + head, called directly: FineTuneModule.forward turns gradients off in a frozen
    backbone, and Grad-CAM needs them."""

    def __init__(self, module: Any) -> None:
        super().__init__()
        self.backbone, self.head = module.backbone, module.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def target_layer(backbone: Backbone) -> nn.Module:
    """The module whose output Grad-CAM explains: the outermost one inside the last group."""
    last = {id(p) for p in backbone.groups[-1].params}
    best: tuple[int, str, nn.Module] | None = None
    for name, module in backbone.model.named_modules():
        params = list(module.parameters())
        if not name or not params or not all(id(p) in last for p in params):
            continue
        depth = name.count(".")
        if best is None or depth <= best[0]:  # the outermost, the last of equals
            best = (depth, name, module)
    if best is None:
        raise RuntimeError(f"No module of {backbone.name} lies inside its last layer group")
    log.debug("Grad-CAM layer of %s: %s", backbone.name, best[1])
    return best[2]


def _as_seen(model: Any, image: Image.Image) -> np.ndarray:
    """The resized, centre-cropped RGB image the model sees, as float32 in [0, 1]."""
    pre, size = model.preprocessing, model.image_size
    crop = T.Compose(
        [
            T.Resize(
                eval_resize(size, pre.crop_pct),
                interpolation=InterpolationMode(pre.interpolation),
                antialias=True,
            ),
            T.CenterCrop(size),
        ]
    )(image)
    return np.asarray(crop.convert("RGB"), dtype=np.float32) / 255.0


def grad_cam_overlay(
    model: Any, image: Image.Image, target: int | None = None, weight: float = 0.5
) -> Image.Image:
    """The Grad-CAM heat map of class `target` (None = the predicted class) over `image`.

    Args:
        model: a loaded checkpoint, `thawkit.inference.predict.LoadedModel` (its module,
            transform, preprocessing and image size).
        image: an RGB image, any size.
        target: the class index to explain.
        weight: the image's share of the blend (the heat map gets the rest).

    Returns:
        An RGB image of the model's input size.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classifier = _Logits(model.module).eval()
    device = next(classifier.parameters()).device
    x = model.transform(image.convert("RGB")).unsqueeze(0).to(device)
    # The input carries the gradient: a checkpoint with a frozen backbone has no parameter that
    # requires grad, and the feature maps would have none either.
    x.requires_grad_(True)
    targets = None if target is None else [ClassifierOutputTarget(int(target))]
    with GradCAM(classifier, [target_layer(model.module.backbone)]) as cam:
        heat = cam(input_tensor=x, targets=targets)[0]
    classifier.zero_grad(set_to_none=True)
    overlay = show_cam_on_image(_as_seen(model, image), heat, use_rgb=True, image_weight=weight)
    return Image.fromarray(overlay)


def overlay_path(folder: Path, image: Path, source: Path) -> Path:
    """`folder/<image's path under source>.png` (the image's own name kept: a.jpg -> a.jpg.png)."""
    rel = Path(image.name)
    if source.is_dir():
        try:
            rel = image.relative_to(source)
        except ValueError:
            pass
    return folder / rel.parent / f"{rel.name}.png"


def write_overlays(
    model: Any, predictions: Sequence[Prediction], folder: Path, source: str | Path
) -> list[Path]:
    """One Grad-CAM overlay of the top class per readable image, under `folder`."""
    names = list(model.class_names)
    source = Path(source).expanduser()
    written = []
    for p in predictions:
        if p.error or not p.classes:
            continue
        path = overlay_path(folder, Path(p.path), source)
        path.parent.mkdir(parents=True, exist_ok=True)
        image = load_rgb(p.path)
        grad_cam_overlay(model, image, names.index(p.classes[0])).save(path)
        written.append(path)
    log.info("Wrote %d Grad-CAM overlays to %s", len(written), folder)
    return written
