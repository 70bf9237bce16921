"""Every strategy's composed config runs end to end and writes a summary.json per the contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thawkit.run.train import train

STRATEGIES = [
    "feature_extraction", "partial", "gradual", "full", "two_phase", "lp_ft", "auto", "scratch",
]  # fmt: skip

CONTRACT = {
    "strategy": str,
    "backbone": str,
    "weights": str,
    "num_classes": int,
    "class_names": list,
    "seed": int,
    "best": dict,
    "test": dict,
    "history": list,
    "train_time_s": float,
    "images_per_s": float,
    "checkpoint": str,
    "diagnosis": str,
}
HISTORY_KEYS = {
    "epoch",
    "trainable_params",
    "total_params",
    "frozen_groups",
    "lr",
    "train/loss",
    "val/loss",
    "val/acc",
    "epoch_time_s",
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_runs_and_writes_summary(strategy: str, make_cfg) -> None:
    # trainer.max_epochs given as an override, as a user would: auto then plans within it
    cfg = make_cfg(f"strategy={strategy}", "trainer.max_epochs=2")
    metrics = train(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    for key, kind in CONTRACT.items():
        assert isinstance(summary[key], kind), (key, summary[key])
    assert summary["strategy"] == strategy
    assert summary["num_classes"] == 2 and summary["class_names"] == ["class_0", "class_1"]
    assert len(summary["history"]) == 2
    for row in summary["history"]:
        assert HISTORY_KEYS <= set(row), set(row) ^ HISTORY_KEYS
        assert "head" in row["lr"]
    assert {"epoch", "val/acc", "val/loss", "val/f1_macro"} <= set(summary["best"])
    assert "test/acc" in summary["test"] and "test/acc" in metrics
    assert (Path(cfg.paths.output_dir) / summary["checkpoint"]).is_file()
    assert summary["weights"] == cfg.model.weights == "none"  # the tiny setup trains from random
