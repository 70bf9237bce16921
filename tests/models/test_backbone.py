"""The Backbone interface: ordered layer groups, pooled features, the weights' own preprocessing."""

from __future__ import annotations

from functools import cache

import pytest
import timm
import torch
import torchvision
from PIL import Image
from skimage import data as skdata
from torch import nn

from thawkit.data.transforms import eval_transform
from thawkit.models.backbone import (
    TORCHVISION_BACKBONES,
    Backbone,
    build_backbone,
    build_model,
    classifier_of,
    resolve_preprocessing,
)

# name -> (number of layer groups, pooled feature width)
EXPECTED = {
    "test_efficientnet": (6, 256),
    "tf_efficientnet_lite0": (8, 1280),  # stem, blocks 0..6 (conv_head joins the last)
    "resnet18": (5, 512),  # stem, layer1..layer4
    "mobilenet_v3_large": (17, 960),  # features[0..16]
    "efficientnet_b0": (9, 1280),  # features[0..8]
    "convnext_tiny": (5, 768),  # stem, 4 stages (downsampling + blocks)
}


@cache
def backbone(name: str) -> Backbone:
    torch.manual_seed(0)
    return build_backbone(name, "none").eval()


@cache
def chelsea() -> Image.Image:
    return Image.fromarray(skdata.chelsea())


@pytest.mark.parametrize("name", list(EXPECTED))
def test_groups_partition_parameters_input_to_output(name: str) -> None:
    b = backbone(name)
    n_groups, _ = EXPECTED[name]
    assert [g.name for g in b.groups] == ["stem"] + [f"stage_{i}" for i in range(1, n_groups)]
    # Every parameter in exactly one group.
    ids = [id(p) for g in b.groups for p in g.params]
    assert len(ids) == len(set(ids)) == len(list(b.parameters()))
    assert set(ids) == {id(p) for p in b.parameters()}
    assert sum(g.num_params for g in b.groups) == sum(p.numel() for p in b.parameters())
    # Ordered input -> output: each group's parameters come after the previous group's.
    position = {id(p): i for i, p in enumerate(b.model.parameters())}
    spans = [
        (min(position[id(p)] for p in g.params), max(position[id(p)] for p in g.params))
        for g in b.groups
    ]
    assert all(prev[1] < nxt[0] for prev, nxt in zip(spans, spans[1:], strict=False)), spans
    # Every BatchNorm layer belongs to the group that holds its parameters.
    norms = [m for m in b.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    owners = {id(n): g for g in b.groups for n in g.norms}
    assert len(owners) == sum(len(g.norms) for g in b.groups) == len(norms)
    for norm in norms:
        group_params = {id(p) for p in owners[id(norm)].params}
        assert all(id(p) in group_params for p in norm.parameters())
    if name == "convnext_tiny":  # LayerNorm only
        assert norms == []
    else:
        assert all(g.norms for g in b.groups)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_pooled_features_have_num_features(name: str) -> None:
    b = backbone(name)
    _, width = EXPECTED[name]
    assert b.num_features == width
    with torch.no_grad():
        out = b(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, width)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_dropped_classifier_maps_the_pooled_features_to_the_source_classes(name: str) -> None:
    """full model = its classifier on the Backbone's features (EWC's source model relies on it)."""
    torch.manual_seed(0)
    full = build_model(name, with_classifier=True).eval()
    body = build_model(name).eval()
    body.load_state_dict({k: v for k, v in full.state_dict().items() if k in body.state_dict()})
    classifier = classifier_of(full, name)
    assert classifier is not None and not isinstance(classifier, nn.Identity)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features, logits = body(x), full(x)
        assert features.shape == (2, EXPECTED[name][1])
        assert logits.shape == (2, 1000)
        torch.testing.assert_close(classifier(features), logits)


@pytest.mark.parametrize("name", sorted(TORCHVISION_BACKBONES))
def test_torchvision_preprocessing_matches_weights_meta(name: str) -> None:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    reference = weights.transforms()
    pre = resolve_preprocessing(name)
    assert pre.input_size == reference.crop_size[0]
    assert pre.mean == pytest.approx(tuple(reference.mean))
    assert pre.std == pytest.approx(tuple(reference.std))
    assert pre.interpolation == reference.interpolation.value
    assert pre.crop_pct == pytest.approx(reference.crop_size[0] / reference.resize_size[0])
    # thawkit's evaluation transform gives the tensor torchvision's own transform gives.
    ours = eval_transform(pre, pre.input_size)(chelsea())
    theirs = reference(chelsea())
    assert ours.shape == theirs.shape == (3, pre.input_size, pre.input_size)
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "test_efficientnet"])
def test_timm_preprocessing_matches_pretrained_cfg(name: str) -> None:
    cfg = timm.get_pretrained_cfg(name)
    pre = resolve_preprocessing(name)
    assert pre.input_size == cfg.input_size[-1]
    assert pre.mean == tuple(cfg.mean) and pre.std == tuple(cfg.std)
    assert pre.interpolation == cfg.interpolation and pre.crop_pct == cfg.crop_pct
    data_cfg = timm.data.resolve_data_config({}, model=timm.create_model(name, pretrained=False))
    ours = eval_transform(pre, pre.input_size)(chelsea())
    theirs = timm.data.create_transform(**data_cfg)(chelsea())
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert backbone(name).preprocessing == pre


def test_efficientnet_lite0_preprocessing_is_not_imagenet_stats() -> None:
    pre = resolve_preprocessing("tf_efficientnet_lite0")
    assert pre.mean == pre.std == (0.5, 0.5, 0.5)
    assert (pre.input_size, pre.interpolation, pre.crop_pct) == (224, "bicubic", 0.875)


@pytest.mark.parametrize("call", [build_backbone, resolve_preprocessing])
def test_unknown_backbone_lists_the_choices(call) -> None:
    with pytest.raises(ValueError, match="Unknown backbone 'resnet_nonexistent'") as err:
        call("resnet_nonexistent")
    message = str(err.value)
    for name in TORCHVISION_BACKBONES:
        assert name in message
    assert "resnet18" in message  # a timm suggestion close to the given name


def test_group_lookup_names_the_groups() -> None:
    b = backbone("test_efficientnet")
    assert b.group("stage_5") is b.groups[-1]
    with pytest.raises(KeyError, match=r"No layer group 'layer4'.*'stem', 'stage_1'"):
        b.group("layer4")
