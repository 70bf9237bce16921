"""Transforms follow the backbone's own preprocessing; augmentation presets and their knobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torchvision.transforms import v2 as T

from conftest import make_image_folder, tiny_cfg
from thawkit.data import ImageFolderDataModule
from thawkit.data.transforms import as_preprocessing, eval_resize, eval_transform, train_transform
from thawkit.models.backbone import resolve_preprocessing

# EfficientNet-Lite0 was trained with mean = std = 0.5 (bicubic); ResNet-18 with ImageNet's.
BACKBONES = ("tf_efficientnet_lite0", "resnet18")
COLOUR = (204, 102, 51)


def _datamodule(tmp_path: Path, backbone: str, *overrides: str) -> ImageFolderDataModule:
    root = make_image_folder(tmp_path / "images", (4, 4), ("train", "val"))
    cfg = tiny_cfg(tmp_path, [f"model.backbone={backbone}", *overrides], data_root=root)
    return instantiate(cfg.data, preprocessing=resolve_preprocessing(cfg.model.backbone))


def test_two_backbones_normalise_with_their_own_statistics(tmp_path: Path) -> None:
    flat = Image.new("RGB", (50, 40), COLOUR)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    outputs = {}
    for name in BACKBONES:
        pre = resolve_preprocessing(name)
        dm = ImageFolderDataModule(root=str(tmp_path), preprocessing=name, image_size=64)
        assert dm.preprocessing == pre
        transform = eval_transform(dm.preprocessing, dm.image_size)
        # A flat colour survives resize and crop: each channel is exactly (v - mean) / std.
        x = transform(flat)
        expected = [(v / 255 - m) / s for v, m, s in zip(COLOUR, pre.mean, pre.std, strict=True)]
        assert x.shape == (3, 64, 64)
        assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5), name
        assert torch.allclose(x.std(dim=(1, 2)), torch.zeros(3), atol=1e-5)
        outputs[name] = transform(photo)
        # Undoing the backbone's own normalisation gives pixel values in [0, 1].
        mean, std = torch.tensor(pre.mean)[:, None, None], torch.tensor(pre.std)[:, None, None]
        pixels = outputs[name] * std + mean
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    lite, resnet = (outputs[n] for n in BACKBONES)
    assert not torch.allclose(lite, resnet, atol=1e-2)
    # mean = std = 0.5 maps [0, 1] onto [-1, 1]; ImageNet statistics do not.
    assert lite.min() >= -1 - 1e-5 and lite.max() <= 1 + 1e-5
    assert resnet.min() < -1.5 or resnet.max() > 1.5


def test_image_size_defaults_to_the_backbone_and_can_be_overridden(tmp_path: Path) -> None:
    with_default = _datamodule(tmp_path, "resnet18", "data.image_size=null")
    assert with_default.image_size == 224  # resnet18's own input size
    other = _datamodule(tmp_path, "test_efficientnet", "data.image_size=null")
    assert other.image_size == 160  # timm's test_efficientnet
    resized = _datamodule(tmp_path, "resnet18", "data.image_size=48")
    resized.setup()
    x, _ = next(iter(resized.val_dataloader()))
    assert x.shape[-2:] == (48, 48)
    x, _ = next(iter(resized.train_dataloader()))
    assert x.shape[-2:] == (48, 48)


@pytest.mark.parametrize("preset", ["none", "basic", "strong"])
def test_images_smaller_than_the_crop_work(preset: str) -> None:
    pre = resolve_preprocessing("tf_efficientnet_lite0")
    tiny = Image.fromarray(np.random.default_rng(1).integers(0, 256, (7, 10, 3), dtype=np.uint8))
    kwargs = {"color_jitter": 0.3, "rotation": 15, "translate": 0.1, "blur": 1.0, "erasing": 1.0}
    transform = train_transform(pre, 40, preset, **(kwargs if preset == "strong" else {}))
    assert transform(tiny).shape == (3, 40, 40)
    assert eval_transform(pre, 40)(tiny).shape == (3, 40, 40)


def _ops(transform: T.Compose) -> list[type]:
    found = []
    for t in transform.transforms:
        found.append(type(t))
        found += [type(inner) for inner in getattr(t, "transforms", [])]
    return found


def test_augment_presets_from_config(tmp_path: Path) -> None:
    none = _datamodule(tmp_path, "test_efficientnet", "augment=none")
    ops = _ops(train_transform(none.preprocessing, 32, **none.augment))
    assert T.RandomResizedCrop not in ops and T.CenterCrop in ops

    basic = _datamodule(tmp_path, "test_efficientnet", "augment=basic")
    ops = _ops(train_transform(basic.preprocessing, 32, **basic.augment))
    assert T.RandomResizedCrop in ops and T.RandomHorizontalFlip in ops
    assert T.ColorJitter not in ops and T.RandomErasing not in ops

    strong = _datamodule(tmp_path, "test_efficientnet", "augment=strong")
    ops = _ops(train_transform(strong.preprocessing, 32, **strong.augment))
    for op in (T.RandomResizedCrop, T.RandomHorizontalFlip, T.ColorJitter, T.RandomAffine,
               T.TrivialAugmentWide, T.GaussianBlur, T.RandomErasing):  # fmt: skip
        assert op in ops, op

    # Every knob can be overridden from the command line.
    tuned = _datamodule(
        tmp_path,
        "test_efficientnet",
        "augment=strong",
        "data.augment.auto_augment=randaugment",
        "data.augment.randaugment_magnitude=5",
        "data.augment.hflip=0",
        "data.augment.erasing=0",
        "data.augment.scale=[0.5,1.0]",
    )
    transform = train_transform(tuned.preprocessing, 32, **tuned.augment)
    ops = _ops(transform)
    assert T.RandAugment in ops and T.TrivialAugmentWide not in ops
    assert T.RandomHorizontalFlip not in ops and T.RandomErasing not in ops
    rand_augment = next(t for t in transform.transforms if isinstance(t, T.RandAugment))
    assert rand_augment.magnitude == 5
    assert transform.transforms[0].scale == (0.5, 1.0)


def test_bad_augment_knobs_fail_at_construction(tmp_path: Path) -> None:
    # Hydra wraps the ValueError in an InstantiationException that keeps its message.
    with pytest.raises(Exception, match="data.augment.auto_augment='autoaugment'"):
        _datamodule(tmp_path, "test_efficientnet", "data.augment.auto_augment=autoaugment")
    with pytest.raises(Exception, match=r"data.augment.hflip=2"):
        _datamodule(tmp_path, "test_efficientnet", "data.augment.hflip=2")
    with pytest.raises(ValueError, match="preprocessing"):
        ImageFolderDataModule(root=str(tmp_path))


def test_eval_resize_is_the_eval_transforms_short_side() -> None:
    assert eval_resize(224, 0.875) == 256
    assert eval_resize(64, 1.0) == 64
    assert eval_resize(64, 1.25) == 64  # a crop fraction above 1 never shrinks below the crop
    for name in BACKBONES:
        pre = resolve_preprocessing(name)
        resize = next(t for t in eval_transform(pre, 96).transforms if isinstance(t, T.Resize))
        assert resize.size == [eval_resize(96, pre.crop_pct)]


def test_preprocessing_from_each_form_it_travels_in() -> None:
    pre = resolve_preprocessing("resnet18")
    assert as_preprocessing(pre) is pre
    assert as_preprocessing("resnet18") == pre
    assert as_preprocessing(pre.to_dict()) == pre  # the checkpoint's and the config's form
    with pytest.raises(TypeError, match="resolve_preprocessing"):
        as_preprocessing(3)  # type: ignore[arg-type]
