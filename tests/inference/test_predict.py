"""Prediction from a checkpoint alone: same probabilities as the trained module, CSV, CLI config."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF_DIR, make_image_folder, tiny_cfg
from thawkit.inference.predict import CheckpointError, find_images, load_checkpoint, predict
from thawkit.inference.predict import main as predict_main
from thawkit.run.train import build

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A briefly trained module (all groups train: every weight and BN statistic moves) and
    its checkpoint. 40 px images: neither the data's 24 px nor the backbone's own size."""
    tmp = tmp_path_factory.mktemp("predict")
    root = make_image_folder(tmp / "images", (12, 12, 10), ("train", "val"))
    cfg = tiny_cfg(
        tmp,
        ["strategy=full", "debug=limit", "trainer.max_epochs=1", "~logger", "data.image_size=40"],
        data_root=root,
    )
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    ckpt = tmp / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return model.eval(), datamodule, ckpt, root


def test_checkpoint_alone_gives_the_modules_probabilities(trained) -> None:
    model, datamodule, ckpt, _ = trained
    loader = datamodule.val_dataloader()
    with torch.no_grad():
        expected = torch.cat([model(x).softmax(dim=1) for x, _ in loader])
    paths = [Path(p) for p, _ in datamodule.splits["val"]]
    predictions, csv_path = predict(ckpt, paths[0].parents[1], top_k=3, progress=False)
    by_path = {p.path: p for p in predictions}
    assert len(by_path) == len(paths)
    for path, probs in zip(paths, expected, strict=True):
        p = by_path[str(path)]
        order = probs.argsort(descending=True)
        assert p.classes == [datamodule.class_names[i] for i in order]
        torch.testing.assert_close(torch.tensor(p.probabilities), probs[order], atol=1e-5, rtol=0)
    assert csv_path == ckpt.parent / "predictions" / "val.csv" and csv_path.is_file()


def test_checkpoint_carries_what_inference_needs(trained) -> None:
    _, datamodule, ckpt, root = trained
    loaded = load_checkpoint(ckpt)
    assert loaded.class_names == datamodule.class_names == ["class_0", "class_1", "class_2"]
    assert loaded.image_size == 40
    assert loaded.preprocessing == datamodule.preprocessing
    # Deployed copies resize as the evaluation transform does.
    resize = next(t for t in loaded.transform.transforms if type(t).__name__ == "Resize")
    assert resize.size == [loaded.metadata()["preprocessing"]["resize"]]
    assert loaded.data["root"] == str(root)
    assert not loaded.module.training


def test_csv_and_printout_from_the_hydra_config(trained, tmp_path: Path, capsys) -> None:
    _, _, ckpt, root = trained
    image = sorted((root / "val" / "class_2").iterdir())[0]
    out = tmp_path / "preds.csv"
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("predict", [f"ckpt={ckpt}", f"input={image}", "top_k=2", f"output={out}"])
    [prediction] = predict_main(cfg)
    printed = capsys.readouterr().out
    assert f"{image}: {prediction.classes[0]} {prediction.probabilities[0]:.3f}" in printed
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2", "error"]
    assert rows[0]["path"] == str(image) and rows[0]["class_1"] == prediction.classes[0]
    assert float(rows[0]["prob_1"]) >= float(rows[0]["prob_2"])


def test_unreadable_file_is_reported_not_fatal(trained, tmp_path: Path) -> None:
    _, _, ckpt, root = trained
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((root / "val" / "class_0").iterdir())[0]
    (folder / "good.png").write_bytes(good.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    predictions, _ = predict(ckpt, folder, top_k=5, output=tmp_path / "p.csv", progress=False)
    broken, fine = predictions
    assert broken.path.endswith("broken.jpg") and broken.error and not broken.classes
    assert not fine.error and len(fine.classes) == 3  # top_k capped at the number of classes
    assert sum(fine.probabilities) == pytest.approx(1.0, abs=1e-5)


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
    not_thawkit = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, not_thawkit)
    with pytest.raises(CheckpointError, match="not a thawkit checkpoint"):
        load_checkpoint(not_thawkit)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        find_images(tmp_path / "empty")


@pytest.mark.slow
def test_predict_script(trained, tmp_path: Path) -> None:
    _, _, ckpt, root = trained
    out = tmp_path / "cli.csv"
    result = subprocess.run(
        [
            sys.executable,
            "predict.py",
            f"ckpt={ckpt}",
            f"input={root / 'val'}",
            "top_k=1",
            f"output={out}",
            "progress=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "THAWKIT_OFFLINE": "1"},
    )
    assert "Wrote 11 predictions" in result.stdout
    assert len(list(csv.DictReader(out.open()))) == 11
    assert not (ROOT / "predict.log").exists()
