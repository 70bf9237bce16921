"""The validation report after fit (reporting/val_report.py) scores best.ckpt on val: from the
fit's cached features when the backbone never trained, with the logits the images give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from conftest import tiny_cfg
from thawkit.data.datasets import ImageDataset
from thawkit.data.folder import discover
from thawkit.data.transforms import eval_transform
from thawkit.finetune.calibration import calibration_record, collect_logits, fit_temperature
from thawkit.finetune.module import FineTuneModule
from thawkit.run.train import build, train


def fitted(tmp_path: Path, image_folder: Path, strategy: str) -> tuple[dict, Path]:
    cfg = tiny_cfg(tmp_path, [f"strategy={strategy}", "augment=none"], data_root=image_folder)
    with open_dict(cfg):
        cfg.logger = None
    train(cfg)
    run = Path(cfg.paths.output_dir)
    return json.loads((run / "summary.json").read_text()), run


def test_a_frozen_backbone_is_scored_from_cached_features(
    tmp_path: Path, image_folder: Path
) -> None:
    summary, run = fitted(tmp_path, image_folder, "feature_extraction")
    record = summary["calibration"]
    assert record["logits_from"] == "cached features"
    # The same numbers from the images, through the checkpoint's own backbone and head.
    datamodule, _, _ = build(tiny_cfg(tmp_path / "again", ["augment=none"], data_root=image_folder))
    datamodule.setup("fit")
    module = FineTuneModule.load_from_checkpoint(
        run / "checkpoints" / "best.ckpt", map_location="cpu", weights="none"
    )
    transform = eval_transform(datamodule.preprocessing, datamodule.image_size)
    dataset = ImageDataset(datamodule.splits["val"], transform)
    logits, labels = collect_logits(module, torch.utils.data.DataLoader(dataset, batch_size=8))
    again = calibration_record(logits, labels, fit_temperature(logits, labels))
    assert record["temperature"] == pytest.approx(again["temperature"], rel=1e-4)
    assert record["nll_before"] == pytest.approx(again["nll_before"], rel=1e-4, abs=1e-6)
    assert float(module.temperature) == pytest.approx(record["temperature"], rel=1e-6)
    assert len(labels) == len(discover(image_folder, 0.15, 0.0, 0)[1]["val"])


def test_a_backbone_that_trained_is_scored_from_the_images(
    tmp_path: Path, image_folder: Path
) -> None:
    summary, _ = fitted(tmp_path, image_folder, "full")
    assert summary["calibration"]["logits_from"] == "images"
