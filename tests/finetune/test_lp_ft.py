"""strategy=lp_ft: a linear probe on cached features to a plateau, then fine-tuning from it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from conftest import tiny_cfg
from thawkit.finetune.module import FineTuneModule
from thawkit.finetune.unfreeze import UnfreezeSchedule
from thawkit.run.train import build


def head_state(module: FineTuneModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.head.state_dict().items()}


class PhaseRecorder(L.Callback):
    """The head at the end of every probe epoch and at the first fine-tuning step."""

    def __init__(self) -> None:
        self.initial: dict[str, torch.Tensor] | None = None
        self.probe_ends: list[dict[str, torch.Tensor]] = []
        self.first_ft_step: dict[str, torch.Tensor] | None = None
        self.first_ft_epoch: int | None = None
        self.lr_scale: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        self.initial = head_state(pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if not pl_module.backbone_frozen and self.first_ft_step is None:
            self.first_ft_step = head_state(pl_module)
            self.first_ft_epoch = trainer.current_epoch
            self.lr_scale = pl_module.lr_scale

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        if self.first_ft_step is None:
            self.probe_ends.append(head_state(pl_module))


def test_fine_tuning_starts_from_the_probe_head_exactly(make_cfg) -> None:
    cfg = make_cfg("strategy=lp_ft", "strategy.plateau_max_epochs=1", "trainer.max_epochs=3")
    assert cfg.model.head.kind == "linear" and cfg.model.head.dropout == 0.0
    with open_dict(cfg):
        cfg.logger = None
        cfg.callbacks.early_stopping = None
    datamodule, model, trainer = build(cfg)
    rec = PhaseRecorder()
    trainer.callbacks.append(rec)
    trainer.fit(model, datamodule=datamodule)

    assert rec.first_ft_epoch == 1 and len(rec.probe_ends) == 1
    probe = rec.probe_ends[-1]
    assert any(not torch.equal(probe[k], rec.initial[k]) for k in probe), "the probe trained"
    assert all(torch.equal(rec.first_ft_step[k], probe[k]) for k in probe)
    assert any(not torch.equal(v, head_state(model)[k]) for k, v in probe.items())
    assert model.num_trainable_groups == len(model.backbone.groups)
    assert rec.lr_scale == pytest.approx(0.1)
    # The probe epochs trained on features computed once by the frozen backbone.
    speed = next(c for c in trainer.callbacks if type(c).__name__ == "SpeedOptions")
    assert "train" in {e["split"] for e in speed.features.extractions}
    schedule = next(c for c in trainer.callbacks if isinstance(c, UnfreezeSchedule))
    assert schedule.name == "lp_ft" and [e["epoch"] for e in schedule.events] == [1]


def _trainer(epoch: int, metric: float | None = None, max_epochs: int = 20) -> Any:
    metrics = {} if metric is None else {"val/loss": torch.tensor(metric)}
    return SimpleNamespace(
        current_epoch=epoch,
        global_step=10 * epoch,
        callback_metrics=metrics,
        sanity_checking=False,
        max_epochs=max_epochs,
    )


def _probe_epochs(
    schedule: UnfreezeSchedule, losses: list[float], max_epochs: int = 20
) -> list[int]:
    module = FineTuneModule(2, "test_efficientnet", "none")
    schedule.setup(_trainer(0, max_epochs=max_epochs), module, "fit")
    trained = []
    for epoch, loss in enumerate(losses):
        schedule.on_train_epoch_start(_trainer(epoch), module)
        trained.append(module.num_trainable_groups)
        schedule.on_validation_end(_trainer(epoch, loss), module)
    return trained


@pytest.mark.parametrize(
    ("losses", "switch"),
    [
        ([1.0, 0.8, 0.81, 0.82, 0.5, 0.4, 0.3, 0.2], 4),  # plateau (patience 2) after epoch 3
        ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], 5),  # still improving: the 5-epoch budget
    ],
)
def test_probe_ends_on_a_plateau_or_its_epoch_budget(
    losses: list[float], switch: int, tmp_path: Path
) -> None:
    """lp_ft.yaml as composed: patience 2 on val/loss, at most 5 probe epochs, then all groups."""
    schedule = instantiate(tiny_cfg(tmp_path, ["strategy=lp_ft"]).strategy)
    trained = _probe_epochs(schedule, losses)
    assert trained == [0] * switch + [6] * (len(losses) - switch)
    assert len(schedule.events) == 1  # one switch, never a second event


def test_plateau_max_epochs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="strategy.plateau_max_epochs=0"):
        UnfreezeSchedule("lp_ft", on_plateau=True, plateau_max_epochs=0)


IMPROVING = [1.0, 0.9, 0.8, 0.7, 0.6]


def test_probe_leaves_half_of_a_short_budget_to_fine_tuning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With trainer.max_epochs=5 the probe's 5-epoch wait would fill the run (lp_ft would be
    feature_extraction): it waits at most 2 epochs, and says so."""
    schedule = instantiate(tiny_cfg(tmp_path, ["strategy=lp_ft"]).strategy)
    with caplog.at_level("WARNING", logger="thawkit.finetune.unfreeze"):
        trained = _probe_epochs(schedule, IMPROVING, max_epochs=5)
    assert trained == [0, 0, 6, 6, 6] and schedule.plateau_max_epochs == 2
    assert "strategy.plateau_max_epochs=5 with trainer.max_epochs=5" in caplog.text


@pytest.mark.parametrize(("wait", "max_epochs"), [(None, 5), (2, 5), (5, 20)])
def test_probe_wait_that_fits_or_waits_for_the_plateau_is_kept(
    wait: int | None, max_epochs: int
) -> None:
    schedule = UnfreezeSchedule(
        "lp_ft", on_plateau=True, groups_per_step=-1, max_events=1, plateau_max_epochs=wait
    )
    _probe_epochs(schedule, IMPROVING, max_epochs=max_epochs)
    assert schedule.plateau_max_epochs == wait
