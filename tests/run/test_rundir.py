"""Run dirs and checkpoints: no run overwrites another, checkpoint writes are atomic, resuming
or fine-tuning from a checkpoint of other classes is a clear error (or a new head on request)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import CONF_DIR, make_image_folder, tiny_cfg
from thawkit.run.lifecycle import AtomicCheckpointIO
from thawkit.run.rundir import RunDirError, hydra_subdir, run_dir
from thawkit.run.train import build, train


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished 1-epoch run on 2 classes: (its image folder, its run dir)."""
    base = tmp_path_factory.mktemp("finished")
    images = make_image_folder(base / "images", (12, 12), ("train", "val"))
    cfg = tiny_cfg(base, ["trainer.max_epochs=1", "~logger"], data_root=images)
    train(cfg)
    return images, Path(cfg.paths.output_dir)


def test_a_new_run_never_overwrites_another(finished, tmp_path: Path) -> None:
    images, run = finished
    before = {p: p.read_bytes() for p in (run / "checkpoints").glob("*.ckpt")}
    cfg = tiny_cfg(tmp_path, ["trainer.max_epochs=1"], data_root=images)
    cfg.paths.output_dir = str(run)
    with pytest.raises(RunDirError, match=f"already holds a run .*resume={run}"):
        train(cfg)
    assert {p: p.read_bytes() for p in (run / "checkpoints").glob("*.ckpt")} == before


def test_ckpt_path_last_needs_a_last_ckpt(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, ["ckpt_path=last"])
    with pytest.raises(RunDirError, match="ckpt_path=last: there is no .*last.ckpt"):
        train(cfg)
    cfg = tiny_cfg(tmp_path, [f"resume={tmp_path / 'nothing'}"])
    with pytest.raises(RunDirError, match="no such run dir"):
        train(cfg)


def test_the_run_dir_follows_resume_and_ckpt_path(tmp_path: Path) -> None:
    default = "outputs/new"
    assert run_dir(None, None, default) == default
    assert run_dir("outputs/a", None, default) == "outputs/a"
    assert run_dir(None, "outputs/b/checkpoints/last.ckpt", default) == "outputs/b"
    assert run_dir(None, "last", default) == default
    assert run_dir(None, "/elsewhere/model.ckpt", default) == default
    assert hydra_subdir(None, None, "t") == ".hydra"
    assert hydra_subdir("outputs/a", None, "t") == ".hydra/resumed-t"
    # Through the real Hydra config.
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("train", [f"resume={tmp_path}"], return_hydra_config=True)
        fresh = compose("train", [], return_hydra_config=True)
    assert cfg.hydra.run.dir == str(tmp_path)
    assert cfg.hydra.output_subdir.startswith(".hydra/resumed-")
    assert fresh.hydra.run.dir.startswith("outputs/") and fresh.hydra.output_subdir == ".hydra"


def test_checkpoint_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    good = path.read_bytes()

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert path.read_bytes() == good  # the previous checkpoint, whole
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1


def test_resume_on_other_classes_is_a_clear_error(finished, tmp_path: Path) -> None:
    _, run = finished
    three = make_image_folder(tmp_path / "three", (8, 8, 8), ("train", "val"))
    ckpt = run / "checkpoints" / "last.ckpt"
    cfg = tiny_cfg(tmp_path, [f"ckpt_path={ckpt}"], data_root=three)
    with pytest.raises(RunDirError) as error:
        train(cfg)
    message = str(error.value)
    assert "2 classes ['class_0', 'class_1']" in message and "3 classes" in message
    assert "model.reset_head=true" in message


def test_fine_tuning_again_from_a_checkpoint(finished, tmp_path: Path, caplog) -> None:
    _, run = finished
    best = run / "checkpoints" / "best.ckpt"
    saved = torch.load(best, weights_only=True)["state_dict"]
    three = make_image_folder(tmp_path / "three", (8, 8, 8), ("train", "val"))

    # Same classes: backbone and head both come from the checkpoint.
    same = make_image_folder(tmp_path / "same", (10, 10), ("train", "val"))
    _, model, _ = build(tiny_cfg(tmp_path / "a", [f"model.weights={best}"], data_root=same))
    for key, value in model.state_dict().items():
        if key.startswith(("head.", "backbone.")):
            assert torch.equal(value, saved[key]), key

    # Other classes: an error that says what to do ...
    with pytest.raises(ValueError, match="3 .*set model.reset_head=true"):
        build(tiny_cfg(tmp_path / "b", [f"model.weights={best}"], data_root=three))
    # ... or, when asked, a new head on the checkpoint's backbone, with a warning.
    overrides = [f"model.weights={best}", "model.reset_head=true"]
    with caplog.at_level(logging.WARNING, logger="thawkit.run.train"):
        _, model, _ = build(tiny_cfg(tmp_path / "c", overrides, data_root=three))
    assert "the head starts fresh" in caplog.text
    assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, saved["backbone." + key]), key


def test_summary_records_status(finished) -> None:
    _, run = finished
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["error"] is None
    assert OmegaConf.create(summary).best  # the contract fields are still there
