"""Unsupervised domain adaptation: DANN (gradient reversal) and MMD on the backbone's features.

The labelled source domain is the training folder; the target domain is a folder of unlabelled
images (`da.target_root`) that the model must also classify well (other camera, other lighting,
photos instead of renderings). Each training step sees a source batch and a target batch; the
classification loss uses the source labels only, and one extra loss pulls the two feature
distributions together:

- `dann` (Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016): a small
  domain classifier learns to tell source features from target features; a gradient reversal
  layer between backbone and domain classifier makes the backbone learn features that fool it.
  The reversed gradient is scaled by lambda_p = 2 / (1 + exp(-gamma p)) - 1, p = training
  progress in [0, 1], gamma = 10: the adversary's signal is off while features are still noise.
- `mmd` (Long et al., "Learning Transferable Features with Deep Adaptation Networks", ICML
  2015): the maximum mean discrepancy between source and target features under a sum of
  Gaussian kernels, added to the loss (weighted by the same ramp).

`DomainAdaptation` is what the `da` config group instantiates; it names the method, the target
folders and the loss's knobs, and builds the loss module (`DANNLoss` or `MMDLoss`) that
`FineTuneModule` adds to its source classification loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thawkit.config.schema import DASchema, check_args
from thawkit.config.schema.training import MMD_ESTIMATORS

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- gradient reversal
class GradientReversal(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by `-scale`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = float(scale)
        return x.view_as(x)  # a new tensor, so autograd records this node

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """`x` unchanged; gradients flowing back through it are multiplied by `-scale`."""
    return GradientReversal.apply(x, scale)


def dann_ramp(progress: float, gamma: float = 10.0) -> float:
    """lambda_p = 2 / (1 + exp(-gamma p)) - 1 (Ganin et al.): 0 at p = 0, ~1 from p ~ 0.5."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


# ----------------------------------------------------------------- MMD
def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    # The direct (not matmul) form: exact zeros on the diagonal and no negative round-off.
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").pow(2)


def gaussian_kernel_bandwidths(
    d2: torch.Tensor, kernel_mul: float = 2.0, kernel_num: int = 5
) -> torch.Tensor:
    """Squared bandwidths: the mean pairwise squared distance times kernel_mul**k, k centred.

    `d2` holds the pairwise squared distances of the pooled features. The base is the data's
    own scale (detached: the kernel is a fixed yardstick per step, not something the features
    can shrink to zero the loss), spread over `kernel_num` octaves as in DAN's multi-kernel MMD.
    """
    n = len(d2)
    base = d2.detach().sum() / max(n * n - n, 1)
    base = base.clamp(min=1e-12)
    exponents = torch.arange(kernel_num, dtype=d2.dtype, device=d2.device)
    exponents = exponents - (kernel_num - 1) / 2
    return base * kernel_mul**exponents


def mmd(
    source: torch.Tensor,
    target: torch.Tensor,
    kernel_mul: float = 2.0,
    kernel_num: int = 5,
    estimator: str = "biased",
) -> torch.Tensor:
    """Squared maximum mean discrepancy of two feature sets under a sum of Gaussian kernels.

    Args:
        source, target: features, (n x d) and (m x d).
        kernel_mul, kernel_num: `kernel_num` Gaussian kernels whose squared bandwidths are the
            mean pairwise squared distance times kernel_mul**k, k = -(num-1)/2 .. (num-1)/2.
        estimator: `biased` (V-statistic: means over all pairs, diagonals included) is >= 0 and
            exactly 0 for identical sets; its bias (a positive offset that shrinks as 1/n) is
            the same for both domains' batches, so it does not move the gradient's direction.
            `unbiased` (U-statistic: the within-domain means leave out i == j) is 0 in
            expectation for equal distributions but can be negative on a batch, and is noisier.

    Returns:
        A scalar tensor (differentiable in both inputs).
    """
    if estimator not in MMD_ESTIMATORS:
        raise ValueError(f"MMD estimator={estimator!r} is not one of {MMD_ESTIMATORS}")
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(
            f"MMD needs two 2-D feature sets of equal width; got {tuple(source.shape)} and "
            f"{tuple(target.shape)}"
        )
    n, m = len(source), len(target)
    if estimator == "unbiased" and (n < 2 or m < 2):
        raise ValueError("The unbiased MMD estimator needs at least 2 samples per domain")
    pooled = torch.cat([source, target]).float()
    d2 = _squared_distances(pooled)
    bandwidths = gaussian_kernel_bandwidths(d2, kernel_mul, kernel_num)
    kernel = sum(torch.exp(-d2 / b) for b in bandwidths)
    k_ss, k_tt, k_st = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    if estimator == "biased":
        return k_ss.mean() + k_tt.mean() - 2 * k_st.mean()
    within_s = (k_ss.sum() - k_ss.diagonal().sum()) / (n * (n - 1))
    within_t = (k_tt.sum() - k_tt.diagonal().sum()) / (m * (m - 1))
    return within_s + within_t - 2 * k_st.mean()


# ----------------------------------------------------------------- losses
class DomainClassifier(nn.Module):
    """MLP from pooled features to one logit: source (0) or target (1)."""

    def __init__(
        self, in_features: int, hidden: Sequence[int] = (256,), dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


class DomainLoss(nn.Module):
    """Base of the domain losses: `forward(source, target, progress) -> (loss, ramp)`.

    `loss` is what the training step adds to the classification loss; `ramp` the schedule's
    value at `progress` (logged as `train/da_ramp`).
    """

    def __init__(self, weight: float = 1.0, ramp: bool = True, gamma: float = 10.0) -> None:
        super().__init__()
        self.weight = float(weight)
        self.ramp = ramp
        self.gamma = float(gamma)

    def ramp_value(self, progress: float) -> float:
        return dann_ramp(progress, self.gamma) if self.ramp else 1.0


class DANNLoss(DomainLoss):
    """Domain classifier behind a gradient reversal layer (scaled by the ramp).

    The classifier itself always learns at full strength (its loss enters with `weight`); the
    backbone receives `-weight * ramp * dL/df`, so it learns to confuse the classifier.
    Returns `weight * BCE`; the BCE alone is near log 2 = 0.69 when the domains are confused.
    """

    def __init__(
        self,
        in_features: int,
        weight: float = 1.0,
        ramp: bool = True,
        gamma: float = 10.0,
        hidden: Sequence[int] = (256,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(weight, ramp, gamma)
        self.classifier = DomainClassifier(in_features, hidden, dropout)

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, progress: float
    ) -> tuple[torch.Tensor, float]:
        ramp = self.ramp_value(progress)
        features = reverse_gradient(torch.cat([source, target]), ramp)
        logits = self.classifier(features).float()
        domain = torch.cat([logits.new_zeros(len(source)), logits.new_ones(len(target))])
        return self.weight * F.binary_cross_entropy_with_logits(logits, domain), ramp


class MMDLoss(DomainLoss):
    """`weight * ramp * MMD^2(source features, target features)` (multi-kernel Gaussian)."""

    def __init__(
        self,
        weight: float = 1.0,
        ramp: bool = True,
        gamma: float = 10.0,
        kernel_mul: float = 2.0,
        kernel_num: int = 5,
        estimator: str = "biased",
    ) -> None:
        super().__init__(weight, ramp, gamma)
        if estimator not in MMD_ESTIMATORS:
            raise ValueError(f"da.estimator={estimator!r} is not one of {MMD_ESTIMATORS}")
        self.kernel_mul, self.kernel_num, self.estimator = kernel_mul, kernel_num, estimator

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, progress: float
    ) -> tuple[torch.Tensor, float]:
        ramp = self.ramp_value(progress)
        value = mmd(source, target, self.kernel_mul, self.kernel_num, self.estimator)
        return self.weight * ramp * value, ramp


# ----------------------------------------------------------------- the config object
class DomainAdaptation:
    """The `da` config group: which method, the target folders, and the loss's knobs.

    Args:
        method: `none`, `dann` or `mmd`.
        target_root: folder of unlabelled target images (nested folders allowed, names
            ignored); required by `dann` and `mmd`.
        target_val_root: optional labelled target folder (`<class>/` folders with the source's
            class names), evaluated after every validation as `target/acc`, `target/loss`. Only
            for measuring: checkpoints and early stopping still follow the source's val split.
        weight: multiplier of the domain loss in the total loss.
        ramp: scale the domain loss (mmd) or the reversed gradient (dann) by
            lambda_p = 2 / (1 + exp(-gamma p)) - 1 over training progress p; false = 1.
        gamma: the ramp's steepness (10 in Ganin et al.).
        hidden, dropout: the DANN domain classifier's hidden widths and dropout.
        kernel_mul, kernel_num, estimator: MMD kernels (see `mmd`).
    """

    def __init__(
        self,
        method: str = DASchema.method,
        target_root: str | None = DASchema.target_root,
        target_val_root: str | None = DASchema.target_val_root,
        weight: float = DASchema.weight,
        ramp: bool = DASchema.ramp,
        gamma: float = DASchema.gamma,
        hidden: Sequence[int] = (256,),  # DASchema.hidden (a list there)
        dropout: float = DASchema.dropout,
        kernel_mul: float = DASchema.kernel_mul,
        kernel_num: int = DASchema.kernel_num,
        estimator: str = DASchema.estimator,
    ) -> None:
        # The ranges and names are the schema's (thawkit.config.schema.DASchema).
        check_args(
            DASchema,
            "da",
            method=method,
            weight=weight,
            gamma=gamma,
            dropout=dropout,
            kernel_mul=kernel_mul,
            kernel_num=kernel_num,
            estimator=estimator,
        )
        if method != "none" and not target_root:
            raise ValueError(
                f"da={method} needs unlabelled target images: set da.target_root=<folder of "
                "target-domain images> (or da=none)."
            )
        if method == "none" and target_root:
            log.warning(
                "da.target_root=%s is set but da=none: the target images are not used. Set "
                "da=dann or da=mmd to adapt to them.",
                target_root,
            )
        self.method = method
        self.target_root = target_root
        self.target_val_root = target_val_root
        self.weight, self.ramp, self.gamma = float(weight), bool(ramp), float(gamma)
        self.hidden, self.dropout = [int(h) for h in hidden], float(dropout)
        self.kernel_mul, self.kernel_num, self.estimator = kernel_mul, int(kernel_num), estimator

    @property
    def enabled(self) -> bool:
        """Whether training adds a domain loss (and so needs target batches)."""
        return self.method != "none"

    def build_loss(self, in_features: int) -> DomainLoss | None:
        """The loss module for features of width `in_features`; None for `none`."""
        if self.method == "dann":
            return DANNLoss(
                in_features, self.weight, self.ramp, self.gamma, self.hidden, self.dropout
            )
        if self.method == "mmd":
            return MMDLoss(
                self.weight, self.ramp, self.gamma, self.kernel_mul, self.kernel_num,
                self.estimator,
            )  # fmt: skip
        return None

    def __repr__(self) -> str:
        return (
            f"DomainAdaptation(method={self.method!r}, target_root={self.target_root!r}, "
            f"target_val_root={self.target_val_root!r}, weight={self.weight})"
        )


# The training and target-validation steps of a fine-tuning module with domain adaptation
# (thawkit.finetune.module.FineTuneModule calls them; `module` is that LightningModule).
def domain_training_step(module: Any, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Source classification loss + the domain loss between source and target features."""
    x, y, target = batch
    # One forward over both domains, as DANN/DAN implementations do: BatchNorm layers that
    # train normalise with statistics of the mixed batch.
    features = module.forward_features(torch.cat([x, target]))
    source_f, target_f = features[: len(x)], features[len(x) :]
    loss = module._step((x, y), "train", logits=module.head(source_f))
    total = module.trainer.estimated_stepping_batches  # inf for an open-ended run: no ramp
    progress = module.global_step / total if 0 < total < float("inf") else 1.0
    da_loss, ramp = module.domain_loss(source_f, target_f, progress)
    module.log("train/da_loss", da_loss, on_step=True, on_epoch=True, batch_size=len(x),
               sync_dist=True)  # fmt: skip
    module.log("train/da_ramp", ramp, on_step=True, on_epoch=False, batch_size=len(x))
    return loss + da_loss


def target_validation_step(module: Any, batch: Sequence[torch.Tensor]) -> None:
    """Loss and metrics on the labelled target folder (`da.target_val_root`)."""
    x, y = batch
    logits = module(x)
    loss = module.loss(logits, y)
    module.target_metrics.update(logits.detach(), y)
    module.log("target/loss", loss, on_step=False, on_epoch=True, batch_size=len(x),
               sync_dist=True, add_dataloader_idx=False)  # fmt: skip
    module.log_dict(module.target_metrics, on_step=False, on_epoch=True, add_dataloader_idx=False)
