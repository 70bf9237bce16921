"""A gradual run stopped after an unfreeze and resumed from last.ckpt continues exactly.

Three runs of `strategy=gradual` (one more group every epoch) with the default cosine
schedule: A stops after 3 epochs; B resumes A's last.ckpt with max_epochs=5; C runs 5 epochs
uninterrupted. B's epochs 3 and 4 must match C's step by step: requires_grad, BatchNorm modes
and statistics updates, and every group's LR (the cosine spans 5 epochs in both). Lightning's
BackboneFinetuning silently kept resumed layers frozen; here requires_grad is checked right
after the resume, before any training step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import make_image_folder, tiny_cfg
from finetune_probe import Probe, fit_with_probe
from thawkit.finetune.unfreeze import UnfreezeSchedule

STEPS_PER_EPOCH = 4  # 24 images, batch 6
OVERRIDES = ["strategy=gradual", "strategy.every_n_epochs=1", "data.batch_size=6"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = make_image_folder(tmp_path_factory.mktemp("images"), (12, 12), ("train", "val"))

    def cfg(name: str, epochs: int):
        out = tmp_path_factory.mktemp(name)
        return tiny_cfg(out, [*OVERRIDES, f"trainer.max_epochs={epochs}"], data_root=root)

    cfg_a = cfg("a", 3)
    probe_a, model_a, _ = fit_with_probe(cfg_a)
    last = Path(cfg_a.paths.output_dir) / "checkpoints" / "last.ckpt"
    # last.ckpt is the latest state (epoch 2), not a copy of best.ckpt (Lightning >= 2.6 default).
    assert (
        torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        == 3 * STEPS_PER_EPOCH
    )
    probe_b, model_b, trainer_b = fit_with_probe(cfg("b", 5), Probe(), ckpt_path=last)
    probe_c, model_c, trainer_c = fit_with_probe(cfg("c", 5))
    return {
        "a": (probe_a, model_a),
        "b": (probe_b, model_b, trainer_b),
        "c": (probe_c, model_c, trainer_c),
    }


def test_requires_grad_right_after_resume(runs: dict) -> None:
    probe_a, model_a = runs["a"]
    probe_b, model_b, _ = runs["b"]
    start = probe_b.at_train_start
    assert start is not None and start["global_step"] == 3 * STEPS_PER_EPOCH
    # Before any step of the resumed run: the top two groups train (unfrozen at epochs 1, 2).
    for group in model_b.backbone.groups:
        trains = group.name in ("stage_5", "stage_4")
        assert set(start["requires_grad"][group.name]["weights"]) == {trains}, group.name
        assert set(start["bn_train"][group.name]) == {trains}, group.name
    assert start["trainable_since"] == model_a.trainable_since
    assert start["trainable_since"]["stage_5"] == STEPS_PER_EPOCH
    assert start["trainable_since"]["stage_4"] == 2 * STEPS_PER_EPOCH
    # Run A's own last step agrees.
    last_a = probe_a.rows[-1]["requires_grad"]
    assert {g for g, r in last_a.items() if all(r["weights"])} == {"head", "stage_5", "stage_4"}


@pytest.mark.parametrize("epoch", [3, 4])
def test_resumed_epochs_match_uninterrupted_run(epoch: int, runs: dict) -> None:
    rows_b = runs["b"][0].epoch_rows(epoch)
    rows_c = runs["c"][0].epoch_rows(epoch)
    assert len(rows_b) == len(rows_c) == STEPS_PER_EPOCH
    for b, c in zip(rows_b, rows_c, strict=True):
        assert b["step"] == c["step"]
        assert b["requires_grad"] == c["requires_grad"], b["step"]
        assert b["bn_train"] == c["bn_train"], b["step"]
        assert b["stats_changed"] == c["stats_changed"], b["step"]
        assert b["lr"].keys() == c["lr"].keys()
        for name in b["lr"]:
            assert b["lr"][name] == pytest.approx(c["lr"][name], rel=1e-12, abs=0), (
                b["step"],
                name,
            )
    # The resumed run unfroze the next group on schedule, and its LR re-warms from the start.
    trains = {g for g, r in rows_b[0]["requires_grad"].items() if all(r["weights"])}
    assert len(trains - {"head"}) == epoch
    assert rows_b[0]["lr"]["stage_2" if epoch == 4 else "stage_3"] > 0


def test_resume_restores_schedule_state(runs: dict) -> None:
    _, model_b, trainer_b = runs["b"]
    _, model_c, trainer_c = runs["c"]
    schedule = [
        next(c for c in t.callbacks if isinstance(c, UnfreezeSchedule))
        for t in (trainer_b, trainer_c)
    ]
    assert schedule[0].events == schedule[1].events
    assert [e["epoch"] for e in schedule[0].events] == [1, 2, 3, 4]
    assert model_b.trainable_since == model_c.trainable_since
    # The optimizer's layout is the same as the uninterrupted run's (no group added on resume).
    names_b = [g["name"] for g in trainer_b.optimizers[0].param_groups]
    names_c = [g["name"] for g in trainer_c.optimizers[0].param_groups]
    assert names_b == names_c
    sched_b = trainer_b.lr_scheduler_configs[0].scheduler
    assert sched_b.total_steps == 5 * STEPS_PER_EPOCH  # from the resumed run's own length
    assert sched_b.last_epoch == trainer_b.global_step == 5 * STEPS_PER_EPOCH
