"""Messy real folders at inference: odd file names, absent classes, earlier results, bad files."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import make_image_folder, tiny_cfg
from thawkit.inference.evaluate import evaluate
from thawkit.inference.predict import predict
from thawkit.run.train import build
from thawkit.textio import open_text

BAD_NAME = os.fsdecode(b"bad\xff.png")  # not valid UTF-8: Linux allows it, training accepts it


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-epoch checkpoint on three classes, and its image folder (train/ and val/)."""
    tmp = tmp_path_factory.mktemp("messy")
    root = make_image_folder(tmp / "images", (8, 8, 8), ("train", "val"))
    cfg = tiny_cfg(
        tmp, ["strategy=full", "debug=limit", "trainer.max_epochs=1", "~logger"], data_root=root
    )
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    ckpt = tmp / "run" / "checkpoints" / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt, root


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open_text(path, "r", newline="") as f:
        return list(csv.DictReader(f))


def _odd_names_folder(root: Path, dest: Path) -> Path:
    """Two good images, one of them with a non-UTF-8 name, and an unreadable non-UTF-8 name."""
    good = sorted((root / "val" / "class_0").iterdir())
    dest.mkdir(parents=True)
    shutil.copy(good[0], dest / "fine.png")
    shutil.copy(good[1], dest / BAD_NAME)
    (dest / os.fsdecode(b"broken\xfe.jpg")).write_bytes(b"not an image")
    return dest


def test_predict_takes_a_non_utf8_file_name(trained, tmp_path: Path, capsys) -> None:
    ckpt, root = trained
    folder = _odd_names_folder(root, tmp_path / "odd")
    predictions, csv_path = predict(ckpt, folder, output=tmp_path / "p.csv", progress=False)
    rows = _read_csv(csv_path)
    assert [r["path"] for r in rows] == [p.path for p in predictions]
    assert len(rows) == 3 and str(folder / BAD_NAME) in {r["path"] for r in rows}
    # The name read back from the CSV opens the file itself.
    assert Path(next(r["path"] for r in rows if "bad" in r["path"])).is_file()
    assert csv_path.read_bytes().count(b"bad\xff.png") == 1


def test_evaluate_takes_a_non_utf8_file_name(trained, tmp_path: Path) -> None:
    ckpt, root = trained
    other = tmp_path / "other"
    _odd_names_folder(root, other / "class_0")
    metrics = evaluate(ckpt, root=other, output_dir=tmp_path / "ev", progress=False)
    assert metrics["num_images"] == 2
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert list(written["skipped_files"]) == [
        str(other / "class_0" / os.fsdecode(b"broken\xfe.jpg"))
    ]
    rows = _read_csv(tmp_path / "ev" / "predictions.csv")
    assert str(other / "class_0" / BAD_NAME) in {r["path"] for r in rows}


def test_predict_command_prints_a_non_utf8_file_name(trained, tmp_path: Path, capfd) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import CONF_DIR
    from thawkit.inference.predict import main as predict_main

    ckpt, root = trained
    folder = _odd_names_folder(root, tmp_path / "odd")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(
            "predict", [f"ckpt={ckpt}", f"input={folder}", f"output={tmp_path / 'c.csv'}"]
        )
    assert len(predict_main(cfg)) == 3
    assert "bad" in capfd.readouterr().out


def test_macro_metrics_leave_out_a_class_without_val_images(tmp_path: Path, caplog) -> None:
    """TensorBoard/summary.json, evaluate's metrics.json and its report.txt agree."""
    from thawkit.run.train import train

    root = make_image_folder(tmp_path / "images", (6, 6, 6), ("train", "val"))
    shutil.rmtree(root / "val" / "class_2")
    cfg = tiny_cfg(tmp_path, ["strategy=full", "trainer.max_epochs=1", "~logger"], data_root=root)
    train(cfg)
    run = Path(cfg.paths.output_dir)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes_without_images"] == {"val": ["class_2"]}
    matrix = summary["confusion_matrix"]["val"]["matrix"]
    recalls = [row[i] / sum(row) for i, row in enumerate(matrix) if sum(row)]
    logged = summary["history"][-1]["val/recall_macro"]
    assert logged == pytest.approx(sum(recalls) / len(recalls), abs=1e-6)

    with caplog.at_level("WARNING"):
        metrics = evaluate(run / summary["checkpoint"], split="val", progress=False)
    assert metrics["recall_macro"] == pytest.approx(logged, abs=1e-6)
    assert metrics["classes_without_images"] == ["class_2"]
    assert "['class_2']" in caplog.text
    macro = next(ln for ln in metrics["report"].splitlines() if "macro avg" in ln).split()
    assert float(macro[3]) == pytest.approx(metrics["recall_macro"], abs=1e-3)
    assert "class_2" in metrics["report"]  # named as not evaluated


def test_evaluate_train_split_says_nothing_about_the_val_folder(trained, tmp_path, caplog) -> None:
    ckpt, _ = trained
    root = make_image_folder(tmp_path / "images", (3, 3, 3), ("train", "val"))
    shutil.rmtree(root / "val" / "class_2")
    with caplog.at_level("WARNING"):
        metrics = evaluate(ckpt, root=root, split="train", top_losses=0, progress=False)
    assert metrics["split"] == "train" and metrics["classes_without_images"] == []
    assert "val" not in caplog.text and "class_2" not in caplog.text


def test_predict_and_evaluate_never_overwrite_an_earlier_result(trained, tmp_path: Path) -> None:
    ckpt, root = trained
    run_dir = ckpt.parent.parent
    # Two inputs that share a folder name: val/class_1, then train/class_1.
    _, first = predict(ckpt, root / "val" / "class_1", progress=False)
    _, second = predict(ckpt, root / "train" / "class_1", progress=False)
    assert first == run_dir / "predictions" / "class_1.csv"
    assert second == run_dir / "predictions" / "class_1-2.csv"
    assert len(_read_csv(first)) == 2 and len(_read_csv(second)) == 8
    with pytest.raises(FileExistsError, match="overwrite=true"):
        predict(ckpt, root / "val" / "class_1", output=first, progress=False)
    predict(ckpt, root / "val" / "class_0", output=first, overwrite=True, progress=False)

    # Two folders named base: data/base, then data2/base.
    for parent in ("data", "data2"):
        make_image_folder(tmp_path / parent / "base", (2, 2, 2), ())
    one = evaluate(ckpt, root=tmp_path / "data" / "base", top_losses=0, progress=False)
    two = evaluate(ckpt, root=tmp_path / "data2" / "base", top_losses=0, progress=False)
    assert Path(one["files"]["metrics"]).parent == run_dir / "eval" / "base-all"
    assert Path(two["files"]["metrics"]).parent == run_dir / "eval" / "base-all-2"
    assert json.loads(Path(one["files"]["metrics"]).read_text())["data_root"].endswith("data/base")
    out = Path(one["files"]["metrics"]).parent
    with pytest.raises(FileExistsError, match="output_dir=.*overwrite=true"):
        evaluate(ckpt, root=tmp_path / "data" / "base", output_dir=out, progress=False)


def _predict_cfg(ckpt: Path, source: Path, out: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("predict", [f"ckpt={ckpt}", f"input={source}", f"output={out}"])


def test_predict_fails_when_nothing_could_be_read(trained, tmp_path: Path) -> None:
    from thawkit.data.folder import DataError
    from thawkit.inference.predict import main as predict_main

    ckpt, _ = trained
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.jpg", "b.png", "c.webp"):
        (folder / name).write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"None of the 3 image file\(s\)"):
        predict_main(_predict_cfg(ckpt, folder, tmp_path / "p.csv"))
    assert not (tmp_path / "p.csv").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        predict_main(_predict_cfg(ckpt, tmp_path / "empty", tmp_path / "q.csv"))


def test_predict_counts_predictions_without_the_unreadable(trained, tmp_path, capfd) -> None:
    from thawkit.inference.predict import main as predict_main

    ckpt, root = trained
    folder = _odd_names_folder(root, tmp_path / "odd")
    out = tmp_path / "p.csv"
    predict_main(_predict_cfg(ckpt, folder, out))
    printed = capfd.readouterr().out
    assert f"Wrote 2 predictions and 1 unreadable file(s) to {out}" in printed
    assert len(_read_csv(out)) == 3
