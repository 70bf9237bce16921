"""Schema of the `model` group: thawkit.finetune.module.FineTuneModule and its head."""

from dataclasses import dataclass, field

from thawkit.config.schema.rules import above, at_least, one_of, spec, within

BN_POLICIES = ("frozen_groups", "all", "none")
HEAD_KINDS = ("linear", "mlp")


@dataclass
class HeadSchema:
    """`model.head`: keywords of thawkit.models.head.Head."""

    kind: str = spec("linear", one_of(HEAD_KINDS))
    # mlp only: widths of the hidden layers, and BatchNorm after each.
    hidden: list[int] = spec([512])
    dropout: float = spec(0.0, within(0, 1, "[)"))
    batchnorm: bool = False


@dataclass
class ModelSchema:
    """`model`: thawkit.finetune.module.FineTuneModule."""

    _target_: str = "thawkit.finetune.module.FineTuneModule"
    # Any timm model name, or resnet18 | resnet50 | mobilenet_v3_large | efficientnet_b0 |
    # convnext_tiny (checked against timm and the torchvision table in thawkit.config.checks).
    backbone: str = "tf_efficientnet_lite0"
    # bundled | imagenet | none | /path/to/weights.pth | a thawkit checkpoint (.ckpt)
    weights: str = "bundled"
    # With a .ckpt trained on other classes: start a new head (true) instead of failing.
    reset_head: bool = False
    head: HeadSchema = field(default_factory=HeadSchema)
    # The head's LR; layer group at depth d below the head trains at lr * lr_decay**d.
    lr: float = spec(2.0e-3, above(0))
    lr_decay: float = spec(0.8, within(0, 1, "(]"))
    weight_decay: float = spec(0.01, at_least(0))
    label_smoothing: float = spec(0.0, within(0, 1, "[)"))
    # Where BatchNorm running statistics stay fixed.
    bn_policy: str = spec("frozen_groups", one_of(BN_POLICIES))
    bn_freeze_affine: bool = False
