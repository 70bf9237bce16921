"""FineTuneLR: schedule shapes with warmup, the frozen gate, re-warmup, and its checkpoint state.

Expected values are written from the shapes' definitions (schedule.py's module docstring), at
chosen steps. Setup: 100 steps, 10 per epoch, a 1-epoch warmup (10 steps) unless stated.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from hydra.utils import instantiate

from conftest import tiny_cfg
from thawkit.finetune.lr_schedule import SCHEDULES, FineTuneLR

TOTAL, SPE = 100, 10
BASE = {"head": 1.0, "stage_1": 0.5}


class Gate:
    """A stand-in for the module's frozen state: group -> (trainable since, LR scale)."""

    def __init__(self) -> None:
        self.since: dict[str, int | None] = {"head": 0, "stage_1": 0}
        self.scale = 1.0

    def __call__(self, group: str) -> tuple[int | None, float]:
        return self.since[group], self.scale


def make(name: str, gate: Gate | None = None, **kwargs) -> FineTuneLR:
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in BASE]
    optimizer = torch.optim.SGD(
        [
            {"params": [p], "lr": lr, "layer_group": g}
            for p, (g, lr) in zip(params, BASE.items(), strict=True)
        ]
    )
    kwargs.setdefault("warmup_epochs", 1)
    return FineTuneLR(
        optimizer, name, total_steps=TOTAL, steps_per_epoch=SPE, gate=gate or Gate(), **kwargs
    )


def lrs_by_step(
    scheduler: FineTuneLR, steps: int = TOTAL + 1, on_step=None
) -> list[dict[str, float]]:
    """The LR of each group used at optimizer step s = 0..steps-1."""
    out = []
    for s in range(steps):
        if on_step:
            on_step(s, scheduler)
        out.append({g["layer_group"]: g["lr"] for g in scheduler.optimizer.param_groups})
        scheduler.optimizer.step()
        scheduler.step()
    return out


def cos(p: float, floor: float = 0.01) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))


# Multiplier of the base LR at chosen steps (warmup (s+1)/10 over the first 10 steps).
SHAPES = {
    "constant": {0: 0.1, 4: 0.5, 9: 1.0, 50: 1.0, 100: 1.0},
    "plateau": {0: 0.1, 9: 1.0, 60: 1.0},  # no metric observed: flat
    "cosine": {0: 0.1, 9: 1.0, 10: 1.0, 55: cos(0.5), 100: 0.01},
    "step": {0: 0.1, 10: 1.0, 39: 1.0, 40: 0.1, 69: 0.1, 70: 0.01},  # every 3 epochs, x0.1
    "cosine_restarts": {9: 1.0, 10: 1.0, 25: cos(0.5), 39: cos(29 / 30), 40: 1.0, 55: cos(0.5)},
    # onecycle, no warmup: cosine up from 1/25 over 30% of the run, then down to the floor.
    "onecycle": {0: 0.04, 15: 0.04 + 0.96 * 0.5, 30: 1.0, 65: cos(0.5, 4e-4), 100: 4e-4},
}
OPTIONS = {
    "step": {"step_epochs": 3, "gamma": 0.1},
    "cosine_restarts": {"restart_epochs": 3},
    "onecycle": {"warmup_epochs": 0, "pct_start": 0.3, "min_lr_ratio": 4e-4},
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_shape_with_warmup_at_chosen_steps(name: str) -> None:
    lrs = lrs_by_step(make(name, **OPTIONS.get(name, {})))
    for step, factor in SHAPES[name].items():
        for group, base in BASE.items():
            assert lrs[step][group] == pytest.approx(base * factor), (name, step, group)
    assert set(SHAPES) == set(SCHEDULES)


def test_cosine_is_monotone_after_warmup_and_warmup_is_linear() -> None:
    head = [r["head"] for r in lrs_by_step(make("cosine"))]
    assert head[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert all(a >= b for a, b in zip(head[10:], head[11:], strict=False))


def test_plateau_shape_follows_observed_metric() -> None:
    sched = make("plateau", plateau_patience=2, plateau_factor=0.1)
    # Improves, then 3 validations without improvement (> patience 2): x0.1; improvement resets.
    for value in [1.0, 0.8, 0.8, 0.85, 0.80005]:
        sched.observe(value)
    assert sched.plateau_scale == pytest.approx(0.1)
    for value in [0.5, 0.6, 0.6]:
        sched.observe(value)
    assert sched.plateau_scale == pytest.approx(0.1)
    sched.observe(0.7)
    assert sched.plateau_scale == pytest.approx(0.01)
    lrs = lrs_by_step(sched, steps=20)
    assert lrs[15]["head"] == pytest.approx(0.01)
    make("cosine").observe(1.0)  # other shapes ignore the metric


def test_frozen_groups_get_zero_and_rewarm_after_unfreeze() -> None:
    gate = Gate()
    gate.since["stage_1"] = None

    def unfreeze_at_20(step: int, sched: FineTuneLR) -> None:
        if step == 20:  # as the unfreeze callback does at an epoch start
            gate.since["stage_1"], gate.scale = 20, 0.5
            sched.refresh()

    lrs = lrs_by_step(make("constant", gate, rewarm_epochs=0.5), steps=40, on_step=unfreeze_at_20)
    assert all(r["stage_1"] == 0.0 for r in lrs[:20])
    # Re-warmup over 5 steps from the unfreeze step itself, at the new LR scale.
    assert [r["stage_1"] for r in lrs[20:26]] == pytest.approx(
        [0.5 * 0.5 * k / 5 for k in (1, 2, 3, 4, 5, 5)]
    )
    assert lrs[19]["head"] == 1.0 and lrs[20]["head"] == 0.5


def test_state_dict_round_trip_holds_progress_only() -> None:
    sched = make("plateau", plateau_patience=0)
    lrs_by_step(sched, steps=37)
    sched.observe(1.0)
    sched.observe(2.0)  # one bad validation > patience 0: x0.1
    state = sched.state_dict()
    assert "gate" not in state and "optimizer" not in state
    assert state["last_epoch"] == 37 and state["plateau_scale"] == pytest.approx(0.1)
    # Survives torch.save / torch.load(weights_only=True), as inside a Lightning checkpoint.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    again = make("plateau", plateau_patience=0)
    again.load_state_dict(loaded)
    again.refresh()
    assert again.state_dict() == state
    assert lrs_by_step(again, steps=5) == lrs_by_step(sched, steps=5)


def test_resumed_schedule_takes_its_length_from_the_new_run() -> None:
    short = make("cosine")
    lrs_by_step(short, steps=30)
    longer = FineTuneLR(
        short.optimizer,
        "cosine",
        total_steps=2 * TOTAL,
        steps_per_epoch=SPE,
        gate=Gate(),
        warmup_epochs=1,
    )
    longer.load_state_dict(short.state_dict())
    longer.refresh()
    assert longer.last_epoch == 30 and longer.total_steps == 2 * TOTAL
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(cos(20 / 190))


def test_bad_settings_fail_clearly() -> None:
    with pytest.raises(ValueError, match=r"scheduler.name='linear' is not one of .*cosine"):
        make("linear")
    with pytest.raises(ValueError, match="warmup"):
        make("cosine", warmup_epochs=-1)


@pytest.mark.parametrize("name", SCHEDULES)
def test_each_scheduler_config_instantiates(name: str, tmp_path) -> None:
    cfg = tiny_cfg(tmp_path, [f"scheduler={name}"])
    sched = instantiate(cfg.scheduler)(
        make("constant").optimizer, total_steps=TOTAL, steps_per_epoch=SPE, gate=Gate()
    )
    assert isinstance(sched, FineTuneLR) and sched.name == name


def test_plateau_observes_the_validation_loss_of_the_same_validation(make_cfg, monkeypatch) -> None:
    import lightning as L

    from thawkit.run.train import build

    observed: list[float] = []
    original = FineTuneLR.observe

    def spy(self: FineTuneLR, metric: float) -> None:
        observed.append(metric)
        original(self, metric)

    monkeypatch.setattr(FineTuneLR, "observe", spy)

    class Logged(L.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if not trainer.sanity_checking:
                self.values.append(float(trainer.callback_metrics["val/loss"]))

    cfg = make_cfg(
        "scheduler=plateau",
        "data.batch_size=6",
        "trainer.max_epochs=2",
        "+trainer.val_check_interval=0.5",
    )
    cfg.logger = None
    datamodule, model, trainer = build(cfg)
    logged = Logged()
    trainer.callbacks.append(logged)
    trainer.fit(model, datamodule=datamodule)
    assert len(observed) == 4 and observed == pytest.approx(logged.values, rel=0, abs=0)
