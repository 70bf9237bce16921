"""strategy=auto turns WiSE-FT on or not: the rule on constructed decisions, its config key, and
a run where auto's `wiseft=true` makes the mixed model the run's model (or the user's value wins).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from conftest import tiny_cfg
from thawkit.config.checks import ConfigError, validate
from thawkit.finetune import auto
from thawkit.finetune.auto import AutoStrategy, Signals
from thawkit.finetune.auto import resolve as auto_resolve
from thawkit.models.backbone import resolve_preprocessing
from thawkit.run.train import train

NUM_GROUPS = 8


def signals(per_class: float, score: float, pretrained: bool = True) -> Signals:
    return Signals(
        num_classes=2,
        images_per_class=per_class,
        min_images_per_class=int(per_class),
        train_images=int(per_class * 2),
        pretrained=pretrained,
        probe_images=24,
        probe_folds=3,
        probe_acc=0.5 + 0.5 * score,
        probe_chance=0.5,
        probe_score=score,
        domain_score=score,
    )


def decision_for(chosen: str, when: str):
    """The table's decision for medium far data (full), then the pick replaced by `chosen`, as
    the race replaces it; WiSE-FT decided for that final pick."""
    policy = AutoStrategy(wiseft=when)
    d = policy.decide(signals(400, 0.1), NUM_GROUPS)
    d.chosen = chosen
    policy.weight_space(d)
    return d


@pytest.mark.parametrize(
    "when, chosen, on",
    [
        ("backbone", "full", True),
        ("backbone", "partial", True),
        ("backbone", "lp_ft", True),
        ("backbone", "feature_extraction", False),  # only the head trains: nothing to mix
        ("backbone", "scratch", False),  # no pretrained start
        ("shared_start", "lp_ft", True),
        ("shared_start", "two_phase", True),
        ("shared_start", "gradual", True),
        ("shared_start", "full", False),  # its head did not start as the probe head
        ("shared_start", "partial", False),
        ("off", "lp_ft", False),
        ("off", "full", False),
    ],
)
def test_wiseft_follows_the_final_pick(when: str, chosen: str, on: bool) -> None:
    d = decision_for(chosen, when)
    assert d.wiseft["on"] is on
    assert d.settings.get("wiseft", False) is on
    assert d.reasons[-1] == f"WiSE-FT: {d.wiseft['reason']}."
    assert d.reasons[-1].startswith("WiSE-FT: on: " if on else "WiSE-FT: off")
    assert chosen in d.wiseft["reason"] or when == "off"
    # Deciding again (a race winner, a resume) leaves one line and the latest answer.
    AutoStrategy(wiseft="off").weight_space(d)
    lines = [r for r in d.reasons if r.startswith("WiSE-FT: ")]
    assert lines == [f"WiSE-FT: {d.wiseft['reason']}."] and d.reasons[-1] == lines[0]
    assert "wiseft" not in d.settings and d.wiseft["on"] is False


def test_the_default_and_a_bad_value(tmp_path: Path) -> None:
    assert AutoStrategy().wiseft == "backbone"
    with pytest.raises(ValueError, match="strategy.wiseft='sometimes'"):
        AutoStrategy(wiseft="sometimes")
    cfg = tiny_cfg(tmp_path, ["strategy=auto", "strategy.wiseft=sometimes"])
    with pytest.raises(ConfigError, match="strategy.wiseft"):
        validate(cfg)
    keep = tiny_cfg(tmp_path, ["strategy=auto", "strategy.keep=[wiseft]"])
    assert instantiate(keep.strategy).keep == ["wiseft"]  # a key auto fills, so keep takes it


def _datamodule(cfg):
    dm = instantiate(cfg.data, preprocessing=resolve_preprocessing(cfg.model.backbone))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_the_users_wiseft_wins(tmp_path: Path, image_folder: Path, monkeypatch) -> None:
    monkeypatch.setattr(auto_resolve, "measure", lambda *a, **k: signals(400, 0.1))
    base = ["strategy=auto", "strategy.race=false", "strategy.wiseft=backbone"]
    cfg = tiny_cfg(tmp_path, [*base, "wiseft=false"], data_root=image_folder)
    record = auto.resolve_auto(cfg, _datamodule(cfg))
    assert record["chosen"] == "full" and record["wiseft"]["on"] is True
    assert record["kept"]["wiseft"] is False and cfg.wiseft is False
    assert "wiseft" not in record["applied"]


def test_auto_turns_wiseft_on_and_the_mix_is_the_runs_model(
    tmp_path: Path, image_folder: Path, monkeypatch
) -> None:
    # Medium data, far domain: the table's full, which trains every backbone group.
    monkeypatch.setattr(auto_resolve, "measure", lambda *a, **k: signals(400, 0.1))
    overrides = [
        "strategy=auto",
        "strategy.race=false",
        "strategy.wiseft=backbone",
        "trainer.max_epochs=2",
        "weight_space.alphas=[0,0.5,1]",
        "weight_space.probe_steps=5",
        "weight_space.bn_images=16",
    ]
    cfg = tiny_cfg(tmp_path, overrides, data_root=image_folder)
    assert cfg.wiseft is False  # the composed default; auto turns it on
    train(cfg)
    run = Path(cfg.paths.output_dir)
    summary = json.loads((run / "summary.json").read_text())
    record = summary["auto"]
    assert record["chosen"] == "full" and record["applied"]["wiseft"] is True
    assert record["wiseft"]["on"] is True and record["reasons"][-1].startswith("WiSE-FT: on:")
    assert cfg.wiseft is True
    mixed = summary["wiseft"]
    assert [row["a"] for row in mixed["curve"]] == [0.0, 0.5, 1.0]
    assert summary["checkpoint"] == "checkpoints/wiseft.ckpt" == mixed["checkpoint"]
    assert (run / "checkpoints" / "wiseft.ckpt").is_file()
    assert json.loads((run / "auto.json").read_text())["wiseft"]["on"] is True
