"""Cheap checks fail before the image scan: a missing weights file, a run dir not writable."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import open_dict

from thawkit.data import folder
from thawkit.models.weights import WeightsError
from thawkit.run.rundir import RunDirError
from thawkit.run.train import train


@pytest.fixture
def no_scan(monkeypatch) -> None:
    def scan(*args, **kwargs):
        raise AssertionError("the image folder was scanned before the cheap checks")

    monkeypatch.setattr(folder, "discover", scan)


def test_missing_weights_file_fails_before_the_scan(make_cfg, no_scan, tmp_path: Path) -> None:
    cfg = make_cfg(f"model.weights={tmp_path / 'missing.pth'}")
    with pytest.raises(WeightsError, match="missing.pth does not exist"):
        train(cfg)


def test_run_dir_not_writable_fails_before_the_scan(make_cfg, no_scan, tmp_path: Path) -> None:
    cfg = make_cfg()
    (tmp_path / "a_file").write_text("")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "a_file" / "run")
    with pytest.raises(RunDirError, match="is not writable"):
        train(cfg)
