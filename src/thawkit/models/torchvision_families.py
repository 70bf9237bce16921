"""torchvision backbones and how each splits into layer groups (timm models declare their own).

torchvision models carry no `group_matcher`, so this table says, per architecture, which
parameter-name prefixes form each layer group, the width of the pooled features, and which
module is the pretrained classifier (a Backbone drops it; EWC's source model keeps it).
"""

from __future__ import annotations

from dataclasses import dataclass

# Parameter-name prefixes of each layer group, ordered input -> output.
_RESNET_GROUPS = [
    ("stem", ("conv1.", "bn1.")),
    *[(f"stage_{i}", (f"layer{i}.",)) for i in range(1, 5)],
]


def _features_groups(n: int) -> list[tuple[str, tuple[str, ...]]]:
    """`features[0]` is the stem, `features[1..n-1]` are stage_1..stage_{n-1}."""
    return [("stem", ("features.0.",))] + [(f"stage_{i}", (f"features.{i}.",)) for i in range(1, n)]


@dataclass(frozen=True)
class TorchvisionFamily:
    """How one torchvision architecture maps onto a Backbone.

    Attributes:
        groups: (group name, parameter-name prefixes), ordered input -> output.
        num_features: width of the pooled feature vector.
        classifier: attribute path of the module that maps the pooled features to the
            pretrained classes' logits (a Backbone replaces it by Identity).
    """

    groups: list[tuple[str, tuple[str, ...]]]
    num_features: int
    classifier: str


TORCHVISION_BACKBONES: dict[str, TorchvisionFamily] = {
    "resnet18": TorchvisionFamily(_RESNET_GROUPS, 512, "fc"),
    "resnet50": TorchvisionFamily(_RESNET_GROUPS, 2048, "fc"),
    # The pretrained classifier's first Linear (960 -> 1280) belongs to the old head: dropped.
    "mobilenet_v3_large": TorchvisionFamily(_features_groups(17), 960, "classifier"),
    "efficientnet_b0": TorchvisionFamily(_features_groups(9), 1280, "classifier"),
    # ConvNeXt: a stage is its downsampling layer plus its blocks (as in timm's `stages.N`);
    # the LayerNorm on the pooled features (classifier.0) is part of the pretrained body.
    "convnext_tiny": TorchvisionFamily(
        [
            ("stem", ("features.0.",)),
            ("stage_1", ("features.1.",)),
            ("stage_2", ("features.2.", "features.3.")),
            ("stage_3", ("features.4.", "features.5.")),
            ("stage_4", ("features.6.", "features.7.", "classifier.0.")),
        ],
        768,
        "classifier.2",
    ),
}
