"""Regularizers that keep a fine-tuned backbone near its pretrained weights: L2-SP and EWC.

Both add a penalty to the training loss over the backbone's parameters that train:

- L2-SP (Li et al., 2018): `strength / 2 * sum_i (w_i - w0_i)^2`, w0 the weights at the start.
- EWC (Kirkpatrick et al., 2017): `strength / 2 * sum_i F_i (w_i - w0_i)^2`, F the diagonal
  Fisher information of the *source* model (the pretrained backbone with its own ImageNet
  classifier), estimated at the start of the fit on target images (transfer/fisher.py).

The factor 1/2 is the papers' convention, so their strengths carry over. The new head gets no
penalty, only its ordinary weight decay (as in the L2-SP paper); weight decay towards zero is
turned off for the backbone groups (it would pull the weights away from w0), unless
`backbone_weight_decay=true`. Frozen parameters are skipped: they equal w0, so head-only epochs
(and the feature cache) are unaffected.

A regularizer is a Lightning callback: it takes its snapshot w0 in `setup`, before a resumed
run's checkpoint overwrites the weights, attaches itself to the module (the module adds
`penalty()` to its loss and logs it as `train/penalty`), and saves w0 (and F) in every
checkpoint, so a resumed run is pulled towards the same pretrained weights whatever the weights
source does in the meantime (+1x the backbone's size per checkpoint for L2-SP, +2x for EWC).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol

import lightning as L
import torch
from torch import nn

from thawkit.config.schema import EWCSchema, L2SPSchema, check_args
from thawkit.models.backbone import Backbone, build_model, classifier_of
from thawkit.models.head import HEAD
from thawkit.models.weights import NoClassifierError, load_weights
from thawkit.transfer.fisher import diagonal_fisher, fisher_images

log = logging.getLogger(__name__)


class RegularizerError(RuntimeError):
    """A regularizer cannot be set up for this run; the message says what to change."""


class RegularizedModule(Protocol):
    """What a regularizer reads from the module it regularizes (thawkit's FineTuneModule).

    Declared here rather than imported: finetune sits above transfer (its module builds the
    domain losses of thawkit.transfer.domain), so transfer never imports it.

    Attributes:
        backbone: the pretrained network; the parameters of `backbone.model` are pulled.
        regularizer: where the regularizer attaches itself for a fit; the module adds
            `regularizer.penalty(module)` to its training loss.
        hparams: `backbone` (the model name) and `weights` (its source), for EWC's source model.
        device: where the penalty is computed.
        training: the mode to return to after the Fisher estimation (`train(mode)`).
    """

    backbone: Backbone
    regularizer: WeightRegularizer | None
    hparams: Any
    device: torch.device
    training: bool

    def log(self, name: str, value: Any, **kwargs: Any) -> None: ...

    def train(self, mode: bool = True) -> Any: ...


# A Protocol's isinstance cannot see submodules (nn.Module keeps them out of __dict__).
_MODULE_ATTRIBUTES = ("backbone", "regularizer")


class WeightRegularizer(L.Callback):
    """Penalty on the distance of the trainable backbone weights from their values at fit start.

    Args:
        strength: the penalty's weight (alpha of L2-SP, lambda of EWC); 0 = no pull.
        backbone_weight_decay: keep the optimizer's weight decay on the backbone groups (off:
            the penalty replaces it there; the head keeps its weight decay).
    """

    def __init__(
        self,
        strength: float = L2SPSchema.strength,
        backbone_weight_decay: bool = L2SPSchema.backbone_weight_decay,
    ) -> None:
        check_args(L2SPSchema, "regularizer", strength=strength)  # the schema's range
        self.strength = float(strength)
        self.backbone_weight_decay = backbone_weight_decay
        # Backbone parameter name -> its value at the start (w0), and the per-weight importance
        # (None = 1 everywhere, L2-SP).
        self.anchor: dict[str, torch.Tensor] = {}
        self.importance: dict[str, torch.Tensor] | None = None

    def __deepcopy__(self, memo: dict) -> WeightRegularizer:
        # Run state, not model state: a copy of the module (an EMA) shares it, never copies it.
        return self

    # ------------------------------------------------------------- lifecycle
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        missing = [a for a in _MODULE_ATTRIBUTES if not hasattr(pl_module, a)]
        if missing:
            raise TypeError(
                f"{type(self).__name__} regularizes a thawkit FineTuneModule only "
                f"({type(pl_module).__name__} has no {' or '.join(missing)})"
            )
        # Setup runs before a resumed run's checkpoint is loaded: these are the source weights.
        # A checkpoint that holds a snapshot replaces it (load_state_dict).
        self.anchor = {
            n: p.detach().clone() for n, p in pl_module.backbone.model.named_parameters()
        }
        self.importance = None
        pl_module.regularizer = self

    def on_fit_start(self, trainer: L.Trainer, pl_module: RegularizedModule) -> None:
        device = pl_module.device
        self.anchor = {n: t.to(device) for n, t in self.anchor.items()}
        if self.importance is not None:
            self.importance = {n: t.to(device) for n, t in self.importance.items()}

    def on_train_start(self, trainer: L.Trainer, pl_module: RegularizedModule) -> None:
        # After the optimizer state is restored, which would bring back its weight decay.
        if self.backbone_weight_decay:
            return
        changed = 0
        for group in trainer.optimizers[0].param_groups:
            if group.get("layer_group", HEAD) != HEAD and group["weight_decay"] != 0.0:
                group["weight_decay"] = 0.0
                changed += 1
        if changed:
            log.info(
                "%s: weight decay off in the %d backbone parameter groups (the penalty pulls "
                "them towards the pretrained weights instead; the head keeps it)",
                type(self).__name__,
                changed,
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: RegularizedModule) -> None:
        pl_module.log("train/weight_distance", self.distance(pl_module), on_epoch=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and getattr(pl_module, "regularizer", None) is self:
            pl_module.regularizer = None

    # ------------------------------------------------------------- the penalty
    def _trainable(self, module: RegularizedModule) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in module.backbone.model.named_parameters() if p.requires_grad)

    def penalty(self, module: RegularizedModule) -> torch.Tensor:
        """strength/2 * sum over trainable backbone weights of importance * (w - w0)^2."""
        if self.strength == 0.0:  # no pull: skip the sum over every trainable weight
            return torch.zeros((), device=module.device)
        terms = []
        for name, p in self._trainable(module):
            sq = (p - self.anchor[name]).pow(2)
            if self.importance is not None:
                sq = sq * self.importance[name]
            terms.append(sq.sum())
        if not terms:
            return torch.zeros((), device=module.device)
        return 0.5 * self.strength * torch.stack(terms).sum()

    @torch.no_grad()
    def distance(self, module: RegularizedModule) -> float:
        """Euclidean distance ||w - w0|| over all backbone parameters (unweighted)."""
        total = torch.zeros((), dtype=torch.float64)
        for name, p in module.backbone.model.named_parameters():
            total += (p.detach() - self.anchor[name].to(p.device)).double().pow(2).sum().cpu()
        return float(total.sqrt())

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "anchor": {n: t.detach().cpu() for n, t in self.anchor.items()},
            "importance": None
            if self.importance is None
            else {n: t.detach().cpu() for n, t in self.importance.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        anchor = state_dict["anchor"]
        if self.anchor and set(anchor) != set(self.anchor):
            raise RegularizerError(
                f"{type(self).__name__}: the checkpoint's pretrained-weight snapshot does not "
                "match this backbone's parameters; resume with the model config it was saved with"
            )
        self.anchor = dict(anchor)
        self.importance = state_dict["importance"]


class L2SP(WeightRegularizer):
    """L2-SP (Li et al., 2018): strength/2 * ||w - w0||^2 over the trainable backbone weights."""


class EWC(WeightRegularizer):
    """EWC: strength/2 * sum F_i (w_i - w0_i)^2, F the source model's diagonal Fisher.

    Args:
        strength: the penalty's weight (lambda).
        fisher_batches: target training batches (of the data module's batch size) used to
            estimate F at the start of the fit, evaluation transform, a fixed random subset.
        normalize: divide F by its mean, so that the mean weight is 1 and `strength` means
            what it means for L2-SP (raw Fisher values are tiny: ~1e-6 for Lite0).
        backbone_weight_decay: keep the optimizer's weight decay on the backbone groups.
        seed: seed of the subset and of the sampled labels.
    """

    def __init__(
        self,
        strength: float = EWCSchema.strength,
        fisher_batches: int = EWCSchema.fisher_batches,
        normalize: bool = EWCSchema.normalize,
        backbone_weight_decay: bool = EWCSchema.backbone_weight_decay,
        seed: int = EWCSchema.seed,
    ) -> None:
        super().__init__(strength, backbone_weight_decay)
        check_args(EWCSchema, "regularizer", fisher_batches=fisher_batches)  # the schema's range
        self.fisher_batches = fisher_batches
        self.normalize = normalize
        self.seed = seed

    def on_fit_start(self, trainer: L.Trainer, pl_module: RegularizedModule) -> None:
        super().on_fit_start(trainer, pl_module)
        if self.importance is not None:
            return
        if trainer.ckpt_path:
            raise RegularizerError(
                f"Resuming from {trainer.ckpt_path}, which was saved without EWC's Fisher "
                "information: it cannot be estimated at the pretrained weights any more. Resume "
                "with the regularizer the run started with, or start a new run from those "
                "weights (model.weights=<checkpoint>)."
            )
        hp = pl_module.hparams
        classifier = source_classifier(hp.backbone, hp.weights).to(pl_module.device)
        images = fisher_images(trainer.datamodule, self.fisher_batches, self.seed)
        was_training = pl_module.training
        try:
            fisher = diagonal_fisher(pl_module.backbone.model, classifier, images, seed=self.seed)
        finally:
            pl_module.train(was_training)
        if self.normalize:
            mean = torch.cat([f.flatten() for f in fisher.values()]).mean().clamp_min(1e-30)
            fisher = {n: f / mean for n, f in fisher.items()}
        self.importance = fisher
        log.info(
            "EWC: diagonal Fisher of the source model from %d target images (labels sampled "
            "from its own softmax%s)",
            len(images.dataset),
            ", normalised to mean 1" if self.normalize else "",
        )


def source_classifier(backbone: str, weights: str) -> nn.Module:
    """The pretrained model's own classifier (e.g. ImageNet's 1000 classes) for `weights`.

    It maps the backbone's pooled features to the source classes: the module thawkit's backbone
    drops. `weights=none` gives the architecture's randomly initialised classifier (for tests).

    Raises:
        RegularizerError: the weights source has no classifier (a file without one, a thawkit
            checkpoint); the message names the alternatives.
    """
    model = build_model(backbone, with_classifier=True)
    classifier = classifier_of(model, backbone)
    if classifier is None:
        raise RegularizerError(f"{backbone} has no classifier: EWC needs the source head")
    try:
        load_weights(model, backbone, weights, with_classifier=True)
    except NoClassifierError as e:
        raise RegularizerError(
            f"{e}: EWC needs the source model's classifier for its Fisher information. Use a "
            "weights file with the classifier, or regularizer=l2sp (the same pull, without the "
            "Fisher weighting)."
        ) from e
    return classifier
