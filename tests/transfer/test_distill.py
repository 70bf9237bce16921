"""Knowledge distillation: the loss by hand, the teacher's inputs, the first step of a real fit."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch

from conftest import tiny_cfg
from thawkit.models.backbone import Preprocessing
from thawkit.run.train import build
from thawkit.transfer.distill import Distillation, distillation_loss, teacher_inputs


def test_distillation_loss_is_t_squared_kl_of_teacher_to_student() -> None:
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    t = 3.0
    p_t = torch.softmax(teacher / t, dim=1)
    by_hand = (p_t * (p_t.log() - torch.log_softmax(student / t, dim=1))).sum(1).mean() * t * t
    torch.testing.assert_close(distillation_loss(student, teacher, t), by_hand)
    assert float(distillation_loss(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-6)


def test_teacher_inputs_renormalise_then_resize() -> None:
    lite = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    imagenet = Preprocessing()  # ImageNet mean/std
    pixels = torch.rand(2, 3, 8, 8)
    x = (pixels - 0.5) / 0.5  # the student's (Lite) normalisation
    same = teacher_inputs(x, lite, lite, 8)
    assert same is x  # nothing to convert
    out = teacher_inputs(x, lite, imagenet, 8)
    mean = torch.tensor(imagenet.mean).view(1, 3, 1, 1)
    std = torch.tensor(imagenet.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (pixels - mean) / std)
    assert teacher_inputs(x, lite, lite, 12).shape == (2, 3, 12, 12)
    # A constant image stays constant whatever the size: resizing keeps the values.
    flat = torch.full((1, 3, 8, 8), 0.3)
    resized = teacher_inputs(flat, lite, lite, 13)
    torch.testing.assert_close(resized, torch.full((1, 3, 13, 13), 0.3))


class FirstStep(L.Callback):
    """Computes the teacher-matching loss of the first batch by hand, and keeps the step's loss."""

    def __init__(self, teacher: torch.nn.Module, temperature: float) -> None:
        self.teacher, self.t = teacher, temperature
        self.by_hand: float | None = None
        self.loss: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx != 0:
            return
        x = batch[0]
        assert pl_module.training
        # The same random draws as the step itself (dropout), which runs right after.
        with torch.random.fork_rng(), torch.no_grad():
            student = pl_module(x)
            teacher = self.teacher(x)
        t = self.t
        p_t = [[math.exp(v / t) for v in row] for row in teacher.tolist()]
        p_t = [[v / sum(row) for v in row] for row in p_t]
        total = 0.0
        for p_row, s_row in zip(p_t, student.tolist(), strict=True):
            log_z = math.log(sum(math.exp(v / t) for v in s_row))
            log_s = [v / t - log_z for v in s_row]
            total += sum(p * (math.log(p) - ls) for p, ls in zip(p_row, log_s, strict=True))
        self.by_hand = total / len(p_t) * t * t

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.loss = float(outputs["loss"])


def test_first_step_loss_is_the_teacher_matching_loss(tmp_path, image_folder) -> None:
    overrides = ["strategy=full", "~logger", "trainer.max_epochs=1"]
    overrides += ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    cfg = tiny_cfg(tmp_path, overrides, data_root=image_folder)
    datamodule, model, trainer = build(cfg)
    # The teacher is the student's start, frozen in eval mode; the student trains (BatchNorm on
    # batch statistics), so the two differ and the loss is not 0.
    teacher = copy.deepcopy(model).eval()
    pre = model.backbone.preprocessing
    distill = Distillation(copy.deepcopy(teacher), pre, datamodule.image_size, 1.0, 2.0)
    probe = FirstStep(teacher, 2.0)
    trainer.callbacks += [distill, probe]
    trainer.fit(model, datamodule=datamodule)
    assert probe.by_hand is not None and probe.by_hand > 1e-6
    assert probe.loss == pytest.approx(probe.by_hand, rel=1e-4, abs=1e-6)
    assert "train/kd_loss_epoch" in trainer.callback_metrics
    assert model.distiller is None  # detached after the fit
    assert not any(k.startswith("teacher") for k in model.state_dict())
