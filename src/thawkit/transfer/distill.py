"""Knowledge distillation: a trained teacher's softened probabilities join the labels in the loss.

The loss of a training step (Hinton et al., 2015):

    (1 - weight) * CE(student, labels)
        + weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))

CE is the module's own loss (soft targets, so Mixup/CutMix, label smoothing and class weights
still apply). The T^2 factor keeps the teacher term's gradients on the scale of the CE term's
as T changes (the paper's convention), so a weight carries over between temperatures.

The teacher is frozen and in evaluation mode, runs without gradients on the same augmented (and
mixed) batch the student sees, on the student's device. Its backbone may differ from the
student's: the batch is converted to the teacher's inputs by `teacher_inputs` (the student's
normalisation undone, the teacher's applied, then resized to the teacher's image size), so a
Lite2 teacher trained at 260 px sees 260 px inputs of a Lite0 student's 224 px batch. The
teacher thus sees the student's crop, upsampled, rather than its own evaluation crop of the
file: the same content, with the field of view the student's augmentation chose.

`Distillation` is a Lightning callback, like the weight regularizers (thawkit.transfer.regularize):
it attaches itself to the module for a fit (`module.distiller`), and the module's training step
hands it the batch, the student's logits and its CE loss. Teacher logits are not cached: the
batches change with every epoch's augmentation and mixing, and the pooled-feature cache
(thawkit.data.feature_cache) holds student features only, so it stays off while a teacher
teaches (every epoch runs both networks on images).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from thawkit.config.schema import DistillSchema, check_args
from thawkit.models.backbone import Preprocessing

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- pure functions
def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch."""
    t = float(temperature)
    student = F.log_softmax(student_logits.float() / t, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(student, teacher, reduction="batchmean", log_target=True)
    return kl * t * t


def teacher_inputs(
    x: torch.Tensor, student: Preprocessing, teacher: Preprocessing, size: int
) -> torch.Tensor:
    """A student's normalised batch as the teacher's inputs: its normalisation, its image size.

    Normalisation is per-channel affine and resizing is a weighted average with weights summing
    to 1, so the order of the two does not matter; the pixels are renormalised once.
    """
    if tuple(student.mean) != tuple(teacher.mean) or tuple(student.std) != tuple(teacher.std):
        shape = (1, -1, 1, 1)
        s_mean, s_std, t_mean, t_std = (
            torch.tensor(v, dtype=x.dtype, device=x.device).view(shape)
            for v in (student.mean, student.std, teacher.mean, teacher.std)
        )
        x = ((x * s_std + s_mean) - t_mean) / t_std
    if x.shape[-2:] != (size, size):
        mode = "bicubic" if teacher.interpolation == "bicubic" else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)
    return x


# ----------------------------------------------------------------- the callback
class DistilledModule(Protocol):
    """What the distillation reads from the student (thawkit's FineTuneModule).

    Declared here rather than imported: finetune sits above transfer.

    Attributes:
        distiller: where the distillation attaches itself for a fit; the training step calls
            `distiller.loss(module, x, logits, ce)`.
        backbone: the student's backbone; its `preprocessing` says how the batch is normalised.
        device: where the teacher runs.
    """

    distiller: Distillation | None
    backbone: Any
    device: torch.device

    def log(self, name: str, value: Any, **kwargs: Any) -> None: ...


class DistillationError(RuntimeError):
    """Distillation cannot go on with these inputs; the message says what to change."""


class Distillation(L.Callback):
    """Adds the teacher-matching term to the student's training loss during a fit.

    Args:
        teacher: a trained classifier (logits over the data's classes); frozen here, evaluated
            without gradients. It is not a submodule of the student: no checkpoint holds it.
        preprocessing: the teacher's own preprocessing (mean, std, interpolation).
        image_size: the teacher's input size (its training image size).
        weight: the teacher term's share of the loss, in [0, 1] (1 = the teacher alone).
        temperature: the softmax temperature T of both networks in the teacher term.
        class_index: teacher logit column of each data class, when the teacher lists the same
            classes in another order; None = the same order.
        record: what summary.json says about the teacher (`distill`).
    """

    def __init__(
        self,
        teacher: nn.Module,
        preprocessing: Preprocessing,
        image_size: int,
        weight: float = DistillSchema.weight,
        temperature: float = DistillSchema.temperature,
        class_index: Sequence[int] | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        check_args(DistillSchema, "distill", weight=weight, temperature=temperature)
        self.teacher = teacher.eval().requires_grad_(False)
        self.preprocessing = preprocessing
        self.image_size = int(image_size)
        self.weight = float(weight)
        self.temperature = float(temperature)
        self.class_index = torch.as_tensor(list(class_index)) if class_index is not None else None
        self.record = {**(record or {}), "weight": self.weight, "temperature": self.temperature}

    def __deepcopy__(self, memo: dict) -> Distillation:
        # Run state, not model state: a copy of the student (an EMA) shares the teacher.
        return self

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not hasattr(pl_module, "distiller") or not hasattr(pl_module, "backbone"):
            raise TypeError(
                f"{type(self).__name__} distils into a thawkit FineTuneModule only "
                f"({type(pl_module).__name__} has no distiller/backbone)"
            )
        pl_module.distiller = self

    def on_fit_start(self, trainer: L.Trainer, pl_module: DistilledModule) -> None:
        self.teacher.to(pl_module.device).eval()
        if self.class_index is not None:
            self.class_index = self.class_index.to(pl_module.device)
        log.info(
            "Distillation: teacher %s (%d px), weight %g, temperature %g",
            self.record.get("teacher", "?"),
            self.image_size,
            self.weight,
            self.temperature,
        )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and getattr(pl_module, "distiller", None) is self:
            pl_module.distiller = None

    @torch.no_grad()
    def teacher_logits(self, student: DistilledModule, x: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's logits of the student's batch `x`, columns in the data's order."""
        if x.ndim != 4:
            raise DistillationError(
                f"The teacher needs image batches (B x C x H x W), got shape {tuple(x.shape)}: "
                "pooled features reach the loss only through the feature cache, which "
                "distillation turns off."
            )
        self.teacher.eval()  # also if something switched it to training in the meantime
        inputs = teacher_inputs(
            x, student.backbone.preprocessing, self.preprocessing, self.image_size
        )
        logits = self.teacher(inputs)
        return logits if self.class_index is None else logits[:, self.class_index]

    def loss(
        self, student: DistilledModule, x: torch.Tensor, logits: torch.Tensor, ce: torch.Tensor
    ) -> torch.Tensor:
        """The training loss: (1 - weight) * ce + weight * the teacher-matching term."""
        kd = distillation_loss(logits, self.teacher_logits(student, x), self.temperature)
        n = len(x)
        student.log("train/kd_loss", kd, on_step=True, on_epoch=True, batch_size=n, sync_dist=True)
        student.log("train/ce_loss", ce, on_step=True, on_epoch=True, batch_size=n, sync_dist=True)
        return (1.0 - self.weight) * ce + self.weight * kd
