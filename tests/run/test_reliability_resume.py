"""Resume and determinism: an interrupted run, resumed, ends exactly as an uninterrupted one.

Every source of randomness is on (augmentation, Mixup, a weighted sampler, dropout in the head)
and the run unfreezes a group every epoch. The interruption is a real SIGINT delivered to this
process during training: `RunGuard` stops at the next batch boundary and saves last.ckpt; the
resumed run (`ckpt_path=last`, same run dir) must end with the same summary.json metrics,
bit for bit, and the same weights.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, open_dict

from conftest import make_image_folder, tiny_cfg
from thawkit.reporting.status import RunInterrupted
from thawkit.run.train import train

EPOCHS = 4
STEPS_PER_EPOCH = 4  # 24 training images, batch 6
OVERRIDES = [
    "strategy=gradual",
    "strategy.every_n_epochs=1",
    "mix=mixup",
    "imbalance=sampler",
    "model.head.dropout=0.3",
    "data.batch_size=6",
    "trainer.deterministic=true",
    f"trainer.max_epochs={EPOCHS}",
]


class SignalAt(L.Callback):
    """Sends `signum` to this process at the end of training batch `batch` of `epoch`."""

    def __init__(self, epoch: int, batch: int, signum: int = signal.SIGINT) -> None:
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signum)


def run(cfg, *callbacks: L.Callback) -> dict[str, Any]:
    """`thawkit.run.train.train` with extra callbacks; returns the run's summary.json."""
    if callbacks:
        import thawkit.run.train as entry

        real_build = entry.build

        def build(c):
            datamodule, model, trainer = real_build(c)
            trainer.callbacks[:0] = list(callbacks)
            return datamodule, model, trainer

        entry.build = build
        try:
            train(cfg)
        finally:
            entry.build = real_build
    else:
        train(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())


def with_workers(cfg: DictConfig, workers: int) -> DictConfig:
    with open_dict(cfg):
        cfg.data.num_workers = workers  # tiny_cfg sets 0
    return cfg


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """Everything in summary.json but timings."""
    out = {k: v for k, v in summary.items() if k not in ("train_time_s", "images_per_s")}
    out["history"] = [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in out["history"]]
    return out


def weights(run_dir: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    path = run_dir / "checkpoints" / name
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), (14, 10), ("train", "val", "test"))


@pytest.fixture(scope="module")
def uninterrupted(images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    cfg = tiny_cfg(tmp_path_factory.mktemp("full"), OVERRIDES, data_root=images)
    return run(cfg), Path(cfg.paths.output_dir)


def test_same_seed_same_metrics(uninterrupted, images: Path, tmp_path: Path) -> None:
    summary, run_dir = uninterrupted
    assert summary["status"] == "completed" and len(summary["history"]) == EPOCHS
    again = run(tiny_cfg(tmp_path, OVERRIDES, data_root=images))
    assert comparable(again) == comparable(summary)
    for key, value in weights(tmp_path / "run").items():
        assert torch.equal(value, weights(run_dir)[key]), key
    # Another seed really changes the run (the comparison above can fail).
    other = run(tiny_cfg(tmp_path / "other", [*OVERRIDES, "seed=1"], data_root=images))
    assert comparable(other)["history"] != comparable(summary)["history"]


@pytest.mark.parametrize(
    ("epoch", "batch", "stopped_at", "workers"),
    [
        # SIGINT in the last batch of epoch 1: the stop comes at epoch 2's first batch, right
        # after epoch 2's start unfroze one more group.
        (1, STEPS_PER_EPOCH - 1, (2, 2 * STEPS_PER_EPOCH), 0),
        # Mid-epoch, after the unfreeze at epoch 2's start.
        (2, 1, (2, 2 * STEPS_PER_EPOCH + 2), 0),
        # The same with 2 DataLoader workers: still equal to the uninterrupted run without any.
        (2, 1, (2, 2 * STEPS_PER_EPOCH + 2), 2),
    ],
    ids=["after-unfreeze", "mid-epoch", "mid-epoch-2-workers"],
)
def test_interrupted_and_resumed_run_ends_as_uninterrupted(
    epoch: int,
    batch: int,
    stopped_at: tuple[int, int],
    workers: int,
    uninterrupted,
    images: Path,
    tmp_path: Path,
) -> None:
    cfg = with_workers(tiny_cfg(tmp_path, OVERRIDES, data_root=images), workers)
    with pytest.raises(RunInterrupted) as stop:
        run(cfg, SignalAt(epoch, batch))
    assert (stop.value.epoch, stop.value.step) == stopped_at
    assert stop.value.code == 128 + signal.SIGINT
    run_dir = Path(cfg.paths.output_dir)
    interrupted = json.loads((run_dir / "summary.json").read_text())
    assert interrupted["status"] == "interrupted" and "SIGINT" in interrupted["error"]
    assert len(interrupted["history"]) == stopped_at[0]  # the finished epochs
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == stopped_at[1]
    # The unfreeze at epoch 2's start is in the checkpoint: 2 groups train.
    assert sum(v is not None for v in saved["thawkit"]["trainable_since"].values()) == 1 + 2

    resumed_cfg = tiny_cfg(tmp_path, [*OVERRIDES, "ckpt_path=last"], data_root=images)
    resumed = run(with_workers(resumed_cfg, workers))
    full, full_dir = uninterrupted
    assert resumed["status"] == "completed"
    ours, theirs = comparable(resumed), comparable(full)
    for row, expected in zip(ours.pop("history"), theirs.pop("history"), strict=True):
        assert row == expected
    assert ours == theirs
    for name in ("last.ckpt", "best.ckpt"):
        theirs = weights(full_dir, name)
        for key, value in weights(run_dir, name).items():
            assert torch.equal(value, theirs[key]), (name, key)
