"""Grad-CAM overlays for a timm and a torchvision backbone (random weights, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY_BACKBONE, make_image_folder
from thawkit.data.transforms import as_preprocessing
from thawkit.finetune.module import FineTuneModule
from thawkit.inference.explain import target_layer, write_overlays
from thawkit.inference.predict import LoadedModel, find_images, predict_probabilities
from thawkit.inference.predictions import rank


@pytest.mark.parametrize(("backbone", "layer"), [(TINY_BACKBONE, "bn2"), ("resnet18", "layer4")])
def test_overlays_written(backbone: str, layer: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = FineTuneModule(num_classes=2, backbone=backbone, weights="none").eval()
    chosen = target_layer(module.backbone)
    assert chosen is dict(module.backbone.model.named_modules())[layer]
    model = LoadedModel(
        module=module,
        class_names=["class_0", "class_1"],
        preprocessing=as_preprocessing(module.backbone.preprocessing.to_dict()),
        image_size=32,
        path=tmp_path / "x.ckpt",
    )
    root = make_image_folder(tmp_path / "images", (2, 2), ("val",), size=40)
    paths = find_images(root)
    probs, errors = predict_probabilities(model, paths, progress=False)
    predictions = rank(probs, model.class_names, paths, errors, 2)
    written = write_overlays(model, predictions, tmp_path / "explain", root)
    assert len(written) == len(paths) == 4
    assert written[0] == tmp_path / "explain" / "val" / "class_0" / "000.png.png"
    from PIL import Image

    with Image.open(written[0]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
