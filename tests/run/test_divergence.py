"""A diverged run stops with a message naming where, and never overwrites a good checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from test_reliability_resume import run

from conftest import make_image_folder, tiny_cfg
from thawkit.finetune.loss_guard import NonFiniteLossError
from thawkit.finetune.module import FineTuneModule

STEPS_PER_EPOCH = 4  # 24 training images, batch 6


class Checkpoints(L.Callback):
    """Remembers the bytes of best.ckpt and last.ckpt as they are when epoch 1 starts."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "checkpoints"
        self.at_epoch_1: dict[str, bytes] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            self.at_epoch_1 = {p.name: p.read_bytes() for p in self.dir.glob("*.ckpt")}


class NaNLossAt(L.Callback):
    def __init__(self, epoch: int, batch: int) -> None:
        self.at = (epoch, batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == self.at:
            real = type(pl_module).loss
            pl_module.loss = lambda logits, y: real(pl_module, logits, y) * float("nan")


class NaNWeightsAt(L.Callback):
    """Corrupts the head after the optimizer step of a batch (the loss itself was finite)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.at = (epoch, batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == self.at:
            with torch.no_grad():
                next(pl_module.head.parameters()).fill_(float("nan"))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images", (12, 12), ("train", "val"))


def check_untouched(run_dir: Path, saved: Checkpoints) -> None:
    assert set(saved.at_epoch_1) == {"best.ckpt", "last.ckpt"}
    for name, content in saved.at_epoch_1.items():
        assert (run_dir / "checkpoints" / name).read_bytes() == content, name
    # best.ckpt still loads and predicts.
    model = FineTuneModule.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt").eval()
    with torch.no_grad():
        logits = model(torch.rand(4, 3, 32, 32))
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "NonFiniteLossError" in summary["error"]
    assert summary["checkpoint"] == "checkpoints/best.ckpt"


def test_nan_loss_stops_before_the_step(images: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, ["data.batch_size=6", "trainer.max_epochs=3"], data_root=images)
    run_dir = Path(cfg.paths.output_dir)
    saved = Checkpoints(run_dir)
    with pytest.raises(NonFiniteLossError) as error:
        run(cfg, saved, NaNLossAt(1, 2))
    message = str(error.value)
    assert f"epoch 1, step {STEPS_PER_EPOCH + 2} (batch 2 of the epoch)" in message
    assert "best.ckpt" in message and "last.ckpt" in message
    assert "before this step changed any weight" in message
    check_untouched(run_dir, saved)


def test_diverged_weights_are_never_saved(images: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, ["data.batch_size=6", "trainer.max_epochs=3"], data_root=images)
    run_dir = Path(cfg.paths.output_dir)
    saved = Checkpoints(run_dir)
    # The last step of epoch 1 corrupts the weights; its validation must not reach the saves.
    with pytest.raises(NonFiniteLossError, match="Non-finite validation loss .* at epoch 1"):
        run(cfg, saved, NaNWeightsAt(1, STEPS_PER_EPOCH - 1))
    check_untouched(run_dir, saved)
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] == 0
