"""strategy=auto within a given budget (the planned groups are reached) and its race (successive
halving on a slice of the training images: deterministic by seed, recorded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import tiny_cfg
from thawkit.finetune import auto
from thawkit.finetune.auto import AutoStrategy, Signals
from thawkit.finetune.auto import resolve as auto_resolve
from thawkit.finetune.auto.budget import fit_schedule, planned_groups, reached_groups
from thawkit.finetune.auto.race import race_slices, successive_halving
from thawkit.models.backbone import layer_group_names, resolve_preprocessing

GRADUAL = {"initial_groups": 0, "every_n_epochs": 1, "groups_per_step": 1}
TWO_PHASE = {"initial_groups": 0, "every_n_epochs": 2, "groups_per_step": -1, "max_events": 1}
LP_FT = {"initial_groups": 0, "on_plateau": True, "plateau_max_epochs": 5,
         "groups_per_step": -1, "max_events": 1}  # fmt: skip
SMALL_FAR = {"initial_groups": 0, "every_n_epochs": 2, "groups_per_step": 1, "max_groups": 4}


@pytest.mark.parametrize("node", [GRADUAL, TWO_PHASE, SMALL_FAR, LP_FT])
@pytest.mark.parametrize("epochs", [2, 3, 5, 8, 20])
def test_a_fitted_schedule_reaches_its_planned_groups(node, epochs) -> None:
    fitted = {**node, **fit_schedule(node, 8, epochs)[0]}
    goal = planned_groups(node, 8)
    assert planned_groups(fitted, 8) == goal  # the plan stays the plan
    # Reached with at least one epoch to spare (two from 3 epochs on).
    spare = 1 if epochs < 3 else 2
    assert reached_groups(fitted, 8, epochs - spare + 1) == goal


def test_gradual_over_8_groups_in_5_epochs_unfreezes_3_a_step() -> None:
    changes, why = fit_schedule(GRADUAL, 8, 5)
    assert changes == {"every_n_epochs": 1, "groups_per_step": 3}
    assert "all 8 training by epoch 3" in why
    assert fit_schedule(GRADUAL, 8, 12) == ({}, None)  # fits as it is
    assert fit_schedule({"initial_groups": -1}, 8, 3) == ({}, None)  # full: nothing to plan
    assert fit_schedule(LP_FT, 8, 5)[0] == {"plateau_max_epochs": 2}


def test_auto_with_max_epochs_given_fits_its_schedule(
    tmp_path: Path, image_folder: Path, monkeypatch
) -> None:
    # medium data, moderate domain: gradual, one group per epoch over every group.
    monkeypatch.setattr(auto_resolve, "measure", lambda *a, **k: _signals(150, 0.6))
    cfg = tiny_cfg(
        tmp_path,
        ["strategy=auto", "trainer.max_epochs=3", "strategy.race=false"],
        data_root=image_folder,
    )
    record = auto.resolve_auto(cfg, _datamodule(cfg))
    groups = len(layer_group_names("test_efficientnet"))
    assert record["chosen"] == "gradual" and cfg.trainer.max_epochs == 3
    node = OmegaConf.to_container(cfg.strategy)
    assert reached_groups(node, groups, 2) == groups  # all of them by epoch 1 of 0..2
    assert record["schedule"]["epochs"] == 3 and record["schedule"]["changes"]
    assert any(r.startswith("Budget: ") for r in record["reasons"])


def test_successive_halving_keeps_the_better_half_and_breaks_ties_by_order() -> None:
    fit = [(f"{i}.png", i % 2) for i in range(32)]
    acc = {"a": 0.5, "b": 0.9, "c": 0.7, "d": 0.9}
    seen: list[tuple[str, int]] = []

    def evaluate(name, prefix):
        seen.append((name, len(prefix)))
        return {"acc": acc[name], "loss": 1.0}

    record = successive_halving(["a", "b", "c", "d"], fit, evaluate)
    assert [r["images"] for r in record["rungs"]] == [16, 32]
    assert record["rungs"][0]["kept"] == ["b", "d"] and record["winner"] == "b"
    assert seen == [("a", 16), ("b", 16), ("c", 16), ("d", 16), ("b", 32), ("d", 32)]


def test_race_slices_are_stratified_seeded_and_disjoint() -> None:
    samples = [(f"{c}/{i}.png", c) for c in range(3) for i in range(30)]
    fit, held = race_slices(samples, 60, 0.25, seed=1)
    assert (fit, held) == race_slices(samples, 60, 0.25, seed=1)
    assert not set(fit) & set(held) and len(fit) + len(held) == 60
    assert [y for _, y in fit[:6]] == [0, 1, 2, 0, 1, 2]  # every prefix is balanced
    assert sorted(y for _, y in held) == [0] * 5 + [1] * 5 + [2] * 5


def test_the_race_is_deterministic_by_seed_and_recorded(
    tmp_path: Path, image_folder: Path, weights_file: Path, monkeypatch
) -> None:
    # Medium data on the signals (small data skips the race; the folder has 12 a class).
    monkeypatch.setattr(auto_resolve, "measure", lambda *a, **k: _signals(150, 0.9))
    records = []
    for run in ("a", "b"):
        cfg = tiny_cfg(
            tmp_path / run,
            [
                "strategy=auto",
                f"model.weights={weights_file}",
                "trainer.max_epochs=2",
                "strategy.candidates=[full]",
                "strategy.race_epochs=1",
                "seed=3",
            ],  # fmt: skip
            data_root=image_folder,
        )
        records.append(auto.resolve_auto(cfg, _datamodule(cfg)))
        saved = json.loads((tmp_path / run / "run" / "auto.json").read_text())
        assert saved["race"] == records[-1]["race"]
    first, second = (r["race"] for r in records)
    # A near domain: feature_extraction joins the race (AutoStrategy.race_names).
    assert first["candidates"] == ["two_phase", "full", "feature_extraction"]
    assert first["seed"] == 3
    for rung_a, rung_b in zip(first["rungs"], second["rungs"], strict=True):
        for name, result in rung_a["results"].items():
            same = {k: v for k, v in result.items() if k != "time_s"}
            assert same == {k: v for k, v in rung_b["results"][name].items() if k != "time_s"}
    assert first["winner"] == second["winner"] == records[0]["chosen"]
    assert any(r.startswith("Race: ") for r in records[0]["reasons"])


def _signals(per_class: float, score: float) -> Signals:
    return Signals(
        num_classes=2, images_per_class=per_class, min_images_per_class=int(per_class),
        train_images=int(2 * per_class), probe_score=score, domain_score=score,
        probe_acc=0.9, probe_chance=0.5, probe_images=24, probe_folds=5,
    )  # fmt: skip


def _datamodule(cfg):
    dm = instantiate(cfg.data, preprocessing=resolve_preprocessing(cfg.model.backbone))
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    import timm
    import torch

    torch.manual_seed(0)
    path = tmp_path / "test_efficientnet.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), path)
    return path


def test_feature_extraction_races_only_where_the_domain_is_near() -> None:
    """A short race favours a head on frozen features; it races where the table could pick it."""
    auto = AutoStrategy()
    near = auto.decide(_signals(150, 0.9), 8)
    assert auto.race_names(near) == ["two_phase", "full", "lp_ft", "feature_extraction"]
    far = auto.decide(_signals(150, 0.1), 8)
    assert auto.race_names(far) == ["full", "lp_ft"]
    asked = AutoStrategy(candidates=["feature_extraction"])  # a user's candidates always race
    assert asked.race_names(far) == ["full", "feature_extraction"]
