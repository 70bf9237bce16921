"""strategy=auto: the decision table on constructed signals, the probe on constructed features,
and end-to-end runs that record (and, on a resume, reuse) the choice."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import make_image_folder, tiny_cfg, write_image
from thawkit.config.checks import ConfigError, validate
from thawkit.finetune import auto
from thawkit.finetune.auto import (
    AutoStrategy,
    Signals,
    domain_score,
    explicit_keys,
    measure,
    probe_score,
    probe_subset,
)
from thawkit.finetune.auto import resolve as auto_resolve
from thawkit.models.backbone import layer_group_names, resolve_preprocessing
from thawkit.run.train import train

NUM_GROUPS = 8
TINY = "test_efficientnet"


def signals(per_class: float, score: float | None, pretrained: bool = True) -> Signals:
    return Signals(
        num_classes=5,
        images_per_class=per_class,
        min_images_per_class=int(per_class),
        train_images=int(per_class * 5),
        pretrained=pretrained,
        probe_images=250,
        probe_folds=5,
        probe_acc=None if score is None else 0.2 + 0.8 * score,
        probe_chance=0.2,
        probe_score=score,
        domain_score=score,
        probe_note="" if score is not None else "no probe: strategy.max_images=0",
    )


# ----------------------------------------------------------------- the decision table
@pytest.mark.parametrize(
    "per_class, score, chosen, lr, lr_decay, epochs",
    [
        (20, 0.95, "feature_extraction", 2e-3, 0.8, 20),  # tiny data, near domain
        (20, 0.55, "gradual", 2e-3, 0.8, 20),  # tiny, moderate
        (20, 0.10, "partial", 2e-3, 0.8, 20),  # tiny, far
        (400, 0.95, "two_phase", 2e-3, 0.8, 12),
        (400, 0.55, "gradual", 2e-3, 0.8, 12),
        (400, 0.10, "full", 2e-3, 0.9, 12),
        (5000, 0.95, "full", 1e-3, 0.7, 8),  # huge data, near
        (5000, 0.55, "full", 2e-3, 0.8, 8),
        (5000, 0.20, "full", 3e-3, 0.9, 8),  # huge data, far (not very far)
        (20000, 0.05, "scratch", 3e-3, 1.0, 30),  # huge and very far
    ],
)
def test_decision_table(per_class, score, chosen, lr, lr_decay, epochs) -> None:
    d = AutoStrategy().decide(signals(per_class, score), NUM_GROUPS)
    assert d.chosen == chosen
    assert d.settings["model.lr"] == lr
    assert d.settings.get("model.lr_decay") == lr_decay
    assert d.settings["trainer.max_epochs"] >= epochs
    # The reasons are sentences with the numbers behind them.
    assert f"{per_class:g} training images per class" in d.reasons[0]
    assert f"domain score {score:.2f}" in d.reasons[1]
    assert d.reasons[-1].startswith(f"{d.size} data + {d.domain} domain -> {chosen}:")


def test_small_data_trains_the_top_groups_with_the_default_settings() -> None:
    """Small data: the top of the backbone trains, with the default LRs and regularisation
    (the stronger settings measured worse: docs/strategies.md); the schedule's depth grows with
    the epochs instead of being compressed into them."""
    gradual = AutoStrategy().decide(signals(20, 0.55), NUM_GROUPS)
    assert gradual.strategy_args == {"initial_groups": 0, "every_n_epochs": 1}
    partial = AutoStrategy().decide(signals(20, 0.1), NUM_GROUPS)
    assert partial.strategy_args == {"initial_groups": 3}  # the top third of 8
    for d in (gradual, partial):
        assert d.settings == {"model.lr": 2e-3, "model.lr_decay": 0.8, "trainer.max_epochs": 20}
        assert d.compress is False
    near = AutoStrategy().decide(signals(20, 0.95), NUM_GROUPS)
    assert "model.weight_decay" not in near.settings
    assert AutoStrategy().decide(signals(400, 0.55), NUM_GROUPS).compress is True


def test_scratch_only_without_pretrained_weights_or_when_allowed() -> None:
    d = AutoStrategy().decide(signals(20, None, pretrained=False), NUM_GROUPS)
    assert d.chosen == "scratch" and "model.weights=none" in d.reasons[-1]
    # Huge and very far, but the user named the weights: never thrown away.
    kept = AutoStrategy().decide(signals(20000, 0.05), NUM_GROUPS, weights_given=True)
    assert kept.chosen == "full" and "model.weights was given" in kept.reasons[-1]
    # Large but not huge: full fine-tuning, not scratch.
    assert AutoStrategy().decide(signals(5000, 0.1), NUM_GROUPS).chosen == "full"


def test_unknown_domain_counts_as_moderate() -> None:
    d = AutoStrategy().decide(signals(20, None), NUM_GROUPS)
    assert d.domain == "unknown" and d.chosen == "gradual"
    assert "unknown (no probe: strategy.max_images=0); treated as moderate" in d.reasons[1]


def test_thresholds_are_configurable_and_checked() -> None:
    s = signals(50, 0.6)
    assert AutoStrategy().decide(s, NUM_GROUPS).chosen == "gradual"
    assert AutoStrategy(small_per_class=30, near=0.5).decide(s, NUM_GROUPS).chosen == "two_phase"
    with pytest.raises(ValueError, match="very_far <= far <= near"):
        AutoStrategy(near=0.3, far=0.5)
    with pytest.raises(ValueError, match="small_per_class <= large_per_class"):
        AutoStrategy(small_per_class=2000)
    with pytest.raises(ValueError, match=r"strategy.keep=\['model.lrr'\]"):
        AutoStrategy(keep=["model.lrr"])


# ----------------------------------------------------------------- the probe signal
def test_probe_score_separates_separable_from_random_features() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    centres = rng.normal(0, 1, (3, 32)) * 3
    separable = centres[labels] + rng.normal(0, 1, (120, 32))
    acc, chance, score, k = probe_score(separable, labels)
    assert (acc, chance, k) == (pytest.approx(1.0, abs=0.02), pytest.approx(1 / 3), 5)
    assert score > 0.95
    noise = rng.normal(0, 1, (120, 32))  # features that say nothing about the labels
    acc, _, score, _ = probe_score(torch.from_numpy(noise), torch.from_numpy(labels))
    assert acc < 0.5 and score < 0.25


def test_repeated_folds_steady_the_probe() -> None:
    # One 5-fold split of 60 samples moves the held-out accuracy by its draw of folds; the mean
    # over 10 reshuffled splits moves much less from seed to seed.
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(2), 30)
    x = rng.normal(0, 1, (60, 16)) + 0.4 * labels[:, None]
    once = [probe_score(x, labels, seed=s)[0] for s in range(8)]
    repeated = [probe_score(x, labels, seed=s, repeats=10)[0] for s in range(8)]
    assert np.std(repeated) < 0.5 * np.std(once), (once, repeated)


def test_probe_chance_is_the_majority_share_and_folds_fit_the_smallest_class() -> None:
    rng = np.random.default_rng(1)
    labels = np.array([0] * 9 + [1] * 3)
    acc, chance, score, k = probe_score(rng.normal(0, 1, (12, 4)), labels)
    assert chance == 0.75 and k == 3 and 0 <= score <= 1
    with pytest.raises(ValueError, match="needs >= 2 classes with >= 2 samples"):
        probe_score(rng.normal(0, 1, (5, 4)), [0, 0, 0, 0, 1])


def test_probe_subset_takes_an_even_share_per_class() -> None:
    samples = [(f"a{i}", 0) for i in range(100)] + [(f"b{i}", 1) for i in range(7)]
    subset = probe_subset(samples, 2, max_images=40, seed=0)
    assert sum(y == 0 for _, y in subset) == 20 and sum(y == 1 for _, y in subset) == 7
    assert subset == probe_subset(samples, 2, max_images=40, seed=0)  # seeded
    assert len(probe_subset(samples, 2, max_images=1)) == 4  # at least 2 per class


def _datamodule(cfg):
    dm = instantiate(cfg.data, preprocessing=resolve_preprocessing(cfg.model.backbone))
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    """A 'pretrained' test_efficientnet: a weights file, so auto measures a probe."""
    torch.manual_seed(0)
    path = tmp_path / "test_efficientnet.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), path)
    return path


def test_domain_score_is_the_headroom_pretraining_closes() -> None:
    # Measured with EfficientNet-Lite0: digits (far from ImageNet) and ants/bees photos (near).
    assert domain_score(0.8802, 0.8711) == pytest.approx(0.0706, abs=1e-3)
    assert domain_score(0.8928, 0.1490) == pytest.approx(0.8740, abs=1e-3)
    assert domain_score(0.3, 0.6) == 0.0  # random features beat the pretrained ones
    assert domain_score(1.0, 1.0) == 1.0  # random features already solve it: nothing to adapt
    assert domain_score(0.5, None) == 0.5  # no baseline: the pretrained score itself


def test_probe_on_images_tells_class_signal_from_none(tmp_path: Path, weights_file) -> None:
    near = make_image_folder(tmp_path / "near", (20, 20), ("train", "val"))
    far = tmp_path / "far"  # both classes drawn from one colour: nothing to separate
    for c in range(2):
        for i in range(20):
            write_image(far / "train" / f"class_{c}" / f"{i}.png", 0, seed=100 * c + i)
            write_image(far / "val" / f"class_{c}" / f"{i}.png", 0, seed=1000 + 100 * c + i)
    found = {}
    for name, root in (("near", near), ("far", far)):
        cfg = tiny_cfg(tmp_path / name, [f"model.weights={weights_file}"], data_root=root)
        s = measure(cfg, _datamodule(cfg), max_images=30, seed=0, baseline=False)
        assert s.probe_images == 30 and s.images_per_class == 20 and s.probe_time_s > 0
        assert s.baseline_score is None and s.domain_score == s.probe_score
        found[name] = AutoStrategy().domain(s)
        found[name + "_score"] = s.probe_score
    assert found["near"] == "near" and found["far"] == "far", found
    # The baseline is the mean over `inits` random inits, each its own draw.
    cfg = tiny_cfg(tmp_path / "far", [f"model.weights={weights_file}"], data_root=far)
    s = measure(cfg, _datamodule(cfg), max_images=30, seed=0, repeats=4, inits=3)
    assert s.probe_repeats == 4 and len(s.baseline_scores) == 3
    assert s.baseline_score == pytest.approx(np.mean(s.baseline_scores), abs=1e-4)
    assert len(set(s.baseline_scores)) > 1, s.baseline_scores
    reason = AutoStrategy().decide(s, s.layer_groups).reasons[1]
    assert "5-fold, 4 repeats" in reason and "3 randomly initialised copies" in reason, reason
    # With the baseline: colours separate in random features too (score 1), so the task
    # leaves pretraining nothing to add, and counts as near (no layer needs to adapt).
    cfg = tiny_cfg(tmp_path / "near", [f"model.weights={weights_file}"], data_root=near)
    s = measure(cfg, _datamodule(cfg), max_images=30, seed=0)
    assert s.baseline_score == 1.0 and s.domain_score == 1.0
    assert s.baseline_acc == 1.0 and s.layer_groups == len(layer_group_names(TINY))


# ----------------------------------------------------------------- end to end
def test_explicit_keys_are_the_command_line_and_keep(tmp_path: Path) -> None:
    tiny_cfg(tmp_path, ["strategy=auto", "trainer.max_epochs=3", "+model.foo=1"])
    keys = explicit_keys(["model.lr"])
    assert {"trainer.max_epochs", "model.foo", "model.lr", "strategy"} <= keys
    assert "model.lr_decay" not in keys


def test_auto_config_validates_and_rejects_unknown_keys(tmp_path: Path) -> None:
    validate(tiny_cfg(tmp_path, ["strategy=auto"]))
    with pytest.raises(ConfigError, match="strategy.initial_groups: unknown key"):
        validate(tiny_cfg(tmp_path, ["strategy=auto", "+strategy.initial_groups=2"]))


def test_without_pretrained_weights_auto_trains_from_scratch(tmp_path, image_folder) -> None:
    cfg = tiny_cfg(tmp_path, ["strategy=auto"], data_root=image_folder)  # weights=none
    record = auto.resolve_auto(cfg, _datamodule(cfg))
    assert record["chosen"] == "scratch" and record["signals"]["probe_images"] == 0
    assert "no probe: model.weights=none" in record["reasons"][1]
    # scratch.yaml's own node and its model keys, and auto's LR and epochs.
    assert cfg.strategy._target_ == "thawkit.finetune.unfreeze.UnfreezeSchedule"
    assert (cfg.strategy.name, cfg.strategy.initial_groups) == ("auto", -1)
    assert (cfg.model.weights, cfg.model.lr, cfg.model.lr_decay) == ("none", 3e-3, 1.0)
    assert cfg.trainer.max_epochs == 30  # not on the command line (tiny_cfg sets it in code)
    assert auto.resolve_auto(cfg, None) is None  # resolved configs are left alone


def test_partial_choice_fills_its_node_and_keep_wins(tmp_path, image_folder, monkeypatch) -> None:
    monkeypatch.setattr(auto_resolve, "measure", lambda *a, **k: signals(20, 0.1))
    cfg = tiny_cfg(
        tmp_path,
        [
            "strategy=auto",
            "strategy.keep=[model.lr_decay]",
            "model.label_smoothing=0.05",
            "strategy.race=false",  # the table's own pick (the race: test_auto_race.py)
        ],
        data_root=image_folder,
    )
    record = auto.resolve_auto(cfg, _datamodule(cfg))
    groups = len(layer_group_names(TINY))
    assert record["chosen"] == "partial"
    assert cfg.strategy.initial_groups == max(1, -(-groups // 3))
    assert cfg.model.lr == 2e-3 and cfg.trainer.max_epochs == 20
    assert cfg.model.lr_decay == 0.8 and cfg.model.label_smoothing == 0.05
    assert record["kept"] == {"model.lr_decay": 0.8}
    assert json.loads((tmp_path / "run" / "auto.json").read_text())["chosen"] == "partial"


def test_small_data_schedule_is_not_compressed_and_skips_the_race(
    tmp_path, image_folder, monkeypatch
) -> None:
    """gradual on small data with 3 epochs: one group per epoch (the top 2 by the last epoch),
    not every group squeezed in; the race is not run (its held-out part would be a few
    images)."""
    monkeypatch.setattr(auto_resolve, "measure", lambda *a, **k: signals(20, 0.55))
    monkeypatch.setattr(auto_resolve, "run_race", lambda *a, **k: pytest.fail("no race"))
    cfg = tiny_cfg(tmp_path, ["strategy=auto", "trainer.max_epochs=3"], data_root=image_folder)
    record = auto.resolve_auto(cfg, _datamodule(cfg))
    groups = len(layer_group_names(TINY))
    assert record["chosen"] == "gradual" and record["race"]["skipped"].startswith("small data")
    assert cfg.strategy.every_n_epochs == 1 and cfg.strategy.get("groups_per_step", 1) == 1
    assert record["schedule"]["changes"] == {}
    assert f"2 of {groups} layer groups train by the last epoch" in record["schedule"]["reason"]
    assert any(r.startswith("Budget: with few images") for r in record["reasons"])


def test_auto_run_records_its_choice_and_keeps_explicit_values(
    tmp_path: Path, image_folder: Path, weights_file: Path, monkeypatch, caplog
) -> None:
    overrides = ["strategy=auto", "trainer.max_epochs=2", f"model.weights={weights_file}"]
    overrides.append("strategy.race=false")  # the table's own pick (the race: test_auto_race.py)
    cfg = tiny_cfg(tmp_path, overrides, data_root=image_folder)
    cfg.model.lr = 0.01  # set in code, not on the command line: auto's 2e-3 replaces it
    with caplog.at_level(logging.INFO, logger="thawkit.finetune.auto"):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    summary = json.loads((run / "summary.json").read_text())
    record = summary["auto"]
    # 12 images per class of two colours: tiny data, classes the features separate.
    assert summary["strategy"] == "auto"
    assert (record["size"], record["domain"], record["chosen"]) == (
        "small",
        "near",
        "feature_extraction",
    )
    assert record["signals"]["images_per_class"] == 12 and record["signals"]["probe_images"] == 24
    expected = AutoStrategy().decide(Signals(**record["signals"]), NUM_GROUPS)
    AutoStrategy().weight_space(expected)  # after the table (and race): the WiSE-FT line
    assert record["chosen"] == expected.chosen and record["reasons"] == expected.reasons
    assert record["wiseft"]["on"] is False and "trains no backbone layer" in record["reasons"][-1]
    # The command line's epochs win; auto's LR is applied (the config records what ran).
    assert record["kept"] == {"trainer.max_epochs": 2}
    assert record["applied"] == {"model.lr": 2e-3, "model.lr_decay": 0.8}
    assert cfg.model.lr == 2e-3 and cfg.trainer.max_epochs == 2
    assert len(summary["history"]) == 2
    assert all(row["frozen_groups"] > 0 for row in summary["history"])  # feature extraction
    assert all(row["lr"]["head"] <= 2e-3 for row in summary["history"])
    text = caplog.text
    assert "12 training images per class" in text and "chose feature_extraction" in text
    assert "kept trainer.max_epochs=2 as given (auto would have picked 20)" in text
    assert json.loads((run / "auto.json").read_text())["chosen"] == "feature_extraction"
    # TensorBoard's hyperparameters are the values the run used, not the composed ones.
    hparams = OmegaConf.load(run / "tensorboard" / "hparams.yaml")
    assert hparams.model.lr == 2e-3 and hparams.strategy.initial_groups == 0

    # A resume reuses the recorded choice (no second probe) and still honours new overrides.
    def no_probe(*args, **kwargs):
        raise AssertionError("a resumed run must not measure again")

    monkeypatch.setattr(auto_resolve, "measure", no_probe)
    resumed = tiny_cfg(
        tmp_path,
        [
            "strategy=auto",
            "trainer.max_epochs=3",
            f"model.weights={weights_file}",
            "strategy.race=false",
            "ckpt_path=last",
        ],
        data_root=image_folder,
    )
    resumed.model.lr = 0.01  # the recorded choice (2e-3) wins on the resume
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="thawkit.finetune.auto"):
        train(resumed)
    assert "resuming with the choice recorded" in caplog.text
    summary = json.loads((run / "summary.json").read_text())
    assert summary["auto"]["chosen"] == "feature_extraction" and len(summary["history"]) == 3
    assert resumed.model.lr == 2e-3


HYMENOPTERA = Path("/work/shared/data/hymenoptera")


@pytest.mark.slow
@pytest.mark.parametrize(
    "data, size, domain, chosen",
    [
        # Ants and bees are ImageNet classes: pretrained features separate them, random don't.
        ("hymenoptera", 224, "near", "two_phase"),
        # 8x8 digit scans: random features separate them almost as well as pretrained ones.
        ("digits", 64, "far", "full"),
    ],
)
def test_real_data_with_imagenet_features(tmp_path, data, size, domain, chosen) -> None:
    if data == "hymenoptera" and not HYMENOPTERA.is_dir():
        pytest.skip("needs the hymenoptera photos")
    overrides = [
        f"data.image_size={size}",
        "model.backbone=tf_efficientnet_lite0",
        "model.weights=bundled",
    ]
    if data == "hymenoptera":
        overrides.append(f"data.root={HYMENOPTERA}")
    cfg = tiny_cfg(tmp_path, overrides)
    s = measure(cfg, _datamodule(cfg), max_images=512, seed=0)
    d = AutoStrategy().decide(s, s.layer_groups)
    assert s.probe_images <= 512 and d.size == "medium", d.reasons
    assert (d.domain, d.chosen) == (domain, chosen), d.reasons


def _random_state() -> tuple:
    return random.getstate(), np.random.get_state()[1].tolist(), torch.random.get_rng_state()


def test_measuring_leaves_the_runs_random_draws_as_they_were(
    tmp_path: Path, image_folder: Path, weights_file: Path
) -> None:
    """The probe builds backbones (drawing their random init); resolve_auto puts every random
    stream back, so the run's head starts as it would under the strategy auto picked."""
    cfg = tiny_cfg(
        tmp_path, ["strategy=auto", f"model.weights={weights_file}"], data_root=image_folder
    )
    datamodule = _datamodule(cfg)
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    before = _random_state()
    measure(cfg, datamodule, 64, 0, True)
    assert not torch.equal(torch.random.get_rng_state(), before[2])  # the probe draws
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    record = auto.resolve_auto(cfg, datamodule)
    assert record["signals"]["probe_images"] > 0
    after = _random_state()
    assert after[0] == before[0] and after[1] == before[1] and torch.equal(after[2], before[2])
