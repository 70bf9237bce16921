"""Regularizers that keep a fine-tuned backbone near its pretrained weights: L2-SP and EWC.

Both add a penalty to the training loss over the backbone's parameters that train:

- L2-SP (Li et al., 2018): `strength / 2 * sum_i (w_i - w0_i)^2`, w0 the weights at the start.
- EWC (Kirkpatrick et al., 2017): `strength / 2 * sum_i F_i (w_i - w0_i)^2`, F the diagonal
  Fisher information of the *source* model (the pretrained backbone with its own ImageNet
  classifier). The source data is not available, so F is estimated at the start of the fit on
  target images: for each image a label is sampled from the source model's own softmax and the
  squared per-image gradient of its log-probability is averaged. With sampled labels this is
  the true Fisher (an unbiased Monte Carlo estimate of it), not the "empirical Fisher", which
  would use true labels: the target labels are not ImageNet classes.

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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import timm
import torch
import torchvision
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, Subset

from thawkit.finetune.module import FineTuneModule
from thawkit.models import weights as weight_sources
from thawkit.models.backbone import TORCHVISION_BACKBONES
from thawkit.models.head import HEAD

log = logging.getLogger(__name__)


class RegularizerError(RuntimeError):
    """A regularizer cannot be set up for this run; the message says what to change."""


class WeightRegularizer(L.Callback):
    """Penalty on the distance of the trainable backbone weights from their values at fit start.

    Args:
        strength: the penalty's weight (alpha of L2-SP, lambda of EWC); 0 = no pull.
        backbone_weight_decay: keep the optimizer's weight decay on the backbone groups (off:
            the penalty replaces it there; the head keeps its weight decay).
    """

    def __init__(self, strength: float = 0.1, backbone_weight_decay: bool = False) -> None:
        if strength < 0:
            raise ValueError(f"regularizer.strength={strength} must be >= 0")
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
        if not isinstance(pl_module, FineTuneModule):
            raise TypeError(f"{type(self).__name__} regularizes a thawkit FineTuneModule only")
        # Setup runs before a resumed run's checkpoint is loaded: these are the source weights.
        # A checkpoint that holds a snapshot replaces it (load_state_dict).
        self.anchor = {
            n: p.detach().clone() for n, p in pl_module.backbone.model.named_parameters()
        }
        self.importance = None
        pl_module.regularizer = self

    def on_fit_start(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        device = pl_module.device
        self.anchor = {n: t.to(device) for n, t in self.anchor.items()}
        if self.importance is not None:
            self.importance = {n: t.to(device) for n, t in self.importance.items()}

    def on_train_start(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
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

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        pl_module.log("train/weight_distance", self.distance(pl_module), on_epoch=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and getattr(pl_module, "regularizer", None) is self:
            pl_module.regularizer = None

    # ------------------------------------------------------------- the penalty
    def _trainable(self, module: FineTuneModule) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in module.backbone.model.named_parameters() if p.requires_grad)

    def penalty(self, module: FineTuneModule) -> torch.Tensor:
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
    def distance(self, module: FineTuneModule) -> float:
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
        strength: float = 0.1,
        fisher_batches: int = 8,
        normalize: bool = True,
        backbone_weight_decay: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(strength, backbone_weight_decay)
        if fisher_batches < 1:
            raise ValueError(f"regularizer.fisher_batches={fisher_batches} must be >= 1")
        self.fisher_batches = fisher_batches
        self.normalize = normalize
        self.seed = seed

    def on_fit_start(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
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


# ----------------------------------------------------------------- the Fisher information
def fisher_images(datamodule: Any, batches: int, seed: int = 0) -> DataLoader:
    """A loader of `batches` batches of target training images with the evaluation transform."""
    from thawkit.data.datamodule import ImageDataset
    from thawkit.data.transforms import eval_transform

    splits = getattr(datamodule, "splits", None)
    if not splits or "train" not in splits:
        raise RegularizerError(
            "EWC estimates its Fisher information on the training images of a thawkit "
            "ImageFolderDataModule (its `splits`); this data module has none."
        )
    dataset = ImageDataset(
        splits["train"],
        eval_transform(datamodule.preprocessing, datamodule.image_size),
        getattr(datamodule, "image_cache", None),
    )
    batch_size = int(getattr(datamodule, "batch_size", 32))
    n = min(len(dataset), batches * batch_size)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return DataLoader(Subset(dataset, order[:n].tolist()), batch_size=batch_size)


def diagonal_fisher(
    backbone: nn.Module,
    classifier: nn.Module,
    images: Iterable[Any],
    seed: int = 0,
    chunk: int = 16,
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information of `classifier(backbone(x))` w.r.t. the backbone parameters.

    F_i = mean over images x of (d log p(y|x) / d w_i)^2 with y ~ p(.|x) sampled once per image
    (the true Fisher, Monte Carlo). Per-image gradients (torch.func.vmap), evaluation mode
    (BatchNorm uses its running statistics, as in the source model's inference).

    Args:
        backbone: the feature extractor (its parameters are the ones returned).
        classifier: maps pooled features to the source classes' logits.
        images: batches `(x, ...)` or tensors of images.
        seed: seed of the sampled labels.
        chunk: images per vmap call (bounds the memory of per-image gradients).
    """
    backbone.eval()
    classifier.eval().requires_grad_(False)  # the Fisher must carry no autograd graph
    device = next(backbone.parameters()).device
    params = {n: p.detach() for n, p in backbone.named_parameters()}
    buffers = dict(backbone.named_buffers())

    def log_prob(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        features = functional_call(backbone, (p, buffers), (x.unsqueeze(0),))
        log_probs = torch.log_softmax(classifier(features), dim=-1)[0]
        return log_probs.gather(0, y.unsqueeze(0)).squeeze(0)  # vmap: no indexing by a tensor

    per_image = vmap(grad(log_prob), in_dims=(None, 0, 0))
    generator = torch.Generator().manual_seed(seed)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for batch in images:
        x = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(device)
        with torch.no_grad():
            probs = torch.softmax(classifier(backbone(x)), dim=-1).float().cpu()
        y = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
        for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True):
            grads = per_image(params, xs, ys)
            for n, g in grads.items():
                total[n] += g.pow(2).sum(0)
        count += len(x)
    if count == 0:
        raise RegularizerError("EWC: no training images to estimate the Fisher information on")
    return {n: (t / count).detach() for n, t in total.items()}


# ----------------------------------------------------------------- the source classifier
def source_classifier(backbone: str, weights: str) -> nn.Module:
    """The pretrained model's own classifier (e.g. ImageNet's 1000 classes) for `weights`.

    It maps the backbone's pooled features to the source classes: the module thawkit's backbone
    drops. `weights=none` gives the architecture's randomly initialised classifier (for tests).

    Raises:
        RegularizerError: the weights source has no classifier (a file without one, a thawkit
            checkpoint); the message names the alternatives.
    """
    weights = str(weights)
    if backbone in TORCHVISION_BACKBONES:
        model = torchvision.models.get_model(backbone, weights=None)
        where = TORCHVISION_BACKBONES[backbone].drop_classifier
    else:
        model = timm.create_model(backbone, pretrained=False)
        if model.num_classes == 0:
            raise RegularizerError(f"{backbone} has no classifier: EWC needs the source head")
        where = None
    if weights == "bundled":
        model.load_state_dict(weight_sources.bundled_state_dict(model.state_dict()))
    elif weights == "imagenet":
        model = _imagenet_with_classifier(model, backbone)
    elif weights != "none":
        _load_classifier_file(model, Path(weights).expanduser(), backbone)
    return model.get_submodule(where) if where else model.get_classifier()


def _imagenet_with_classifier(model: nn.Module, backbone: str) -> nn.Module:
    if backbone in TORCHVISION_BACKBONES:
        model.load_state_dict(weight_sources._torchvision_imagenet(backbone))
        return model
    return weight_sources.timm_imagenet_model(backbone, num_classes=None)


def _load_classifier_file(model: nn.Module, path: Path, backbone: str) -> None:
    if path.suffix == ".ckpt":
        raise RegularizerError(
            f"model.weights={path} is a thawkit checkpoint: its head is not the source model's "
            "classifier, so EWC has no source Fisher. Use regularizer=l2sp (the same pull, "
            "without the Fisher weighting)."
        )
    state = weight_sources._from_file(model, path)
    missing = [k for k in model.state_dict() if k not in state]
    if missing:
        raise RegularizerError(
            f"model.weights={path} holds no classifier for {backbone} (missing {missing[:3]}): "
            "EWC needs the source model's classifier for its Fisher information. Use a weights "
            "file with the classifier, or regularizer=l2sp."
        )
    model.load_state_dict(state)
