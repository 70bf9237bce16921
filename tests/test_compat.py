"""thawkit.compat: the Lightning internals it wraps exist in the installed Lightning."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging

from thawkit import compat


def test_checkpoint_and_weight_averaging_internals() -> None:
    assert compat.last_saved_step(ModelCheckpoint()) == 0
    averaging = WeightAveraging()
    assert compat.averaged_model(averaging) is None
    assert compat.averaging_device(averaging) is None
    compat.drop_averaged_model(averaging)
    assert compat.averaged_model(averaging) is None


def test_loop_internals_before_fit() -> None:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    assert compat.batches_done_on_resume(trainer) == 0
    assert compat.batch_being_prepared(trainer) == 0
    assert compat.epochs_processed(trainer) == 0
    assert compat.epoch_running_means(trainer) == {}
    compat.restart_training_fetcher(trainer, 0)  # no fetcher yet: nothing to restart


def test_script_launcher_is_recognised() -> None:
    ddp = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    assert compat.relaunches_script(ddp.strategy.launcher)
    single = L.Trainer(accelerator="cpu", devices=1, logger=False)
    assert not compat.relaunches_script(single.strategy.launcher)
