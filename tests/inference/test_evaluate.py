"""evaluate.py: metrics equal to the run's own test metrics, report, top losses, new folders."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from conftest import CONF_DIR, make_image_folder, tiny_cfg
from thawkit.data.folder import DataError
from thawkit.inference.evaluate import evaluate
from thawkit.inference.evaluate import main as evaluate_main
from thawkit.run.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    """A short run on train/val/test folders; its summary holds the test metrics of best.ckpt."""
    tmp = tmp_path_factory.mktemp("evaluate")
    root = make_image_folder(tmp / "images", (12, 12, 10), ("train", "val", "test"))
    overrides = ["strategy=full", "debug=limit", "trainer.max_epochs=1", "~logger"]
    cfg = tiny_cfg(tmp, overrides, data_root=root)
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    return run_dir, json.loads((run_dir / "summary.json").read_text()), root


def test_metrics_match_the_runs_test_metrics(run, capsys) -> None:
    run_dir, summary, _ = run
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("evaluate", [f"ckpt={run_dir / summary['checkpoint']}", "progress=false"])
    metrics = evaluate_main(cfg)
    out = run_dir / "eval" / "images-test"
    assert metrics["split"] == "test" and metrics["num_images"] == 4 + 4 + 3
    # The same images through the same checkpoint as trainer.test(ckpt_path="best"):
    test = summary["test"]
    assert metrics["acc"] == pytest.approx(test["test/acc"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(test["test/loss"], abs=1e-5)
    assert metrics["f1_macro"] == pytest.approx(test["test/f1_macro"], abs=1e-6)
    assert metrics["recall_macro"] == pytest.approx(test["test/recall_macro"], abs=1e-6)
    assert metrics["confusion_matrix"] == summary["confusion_matrix"]["test"]["matrix"]
    assert (run_dir / "plots" / "confusion_matrix_test.png").is_file()  # drawn after test

    written = json.loads((out / "metrics.json").read_text())
    assert written["acc"] == metrics["acc"]
    assert set(written["per_class"]) == {"class_0", "class_1", "class_2"}
    assert {"precision", "recall", "f1", "support"} == set(written["per_class"]["class_2"])
    assert written["per_class"]["class_2"]["support"] == 3
    report = (out / "report.txt").read_text()
    assert "class_1" in report and "macro avg" in report
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 11
    assert sum(int(r["correct"]) for r in rows) == round(metrics["acc"] * 11)
    printed = capsys.readouterr().out
    assert f"accuracy {metrics['acc']:.4f}" in printed and "top_losses" in printed


def test_top_losses_grid_and_confusion_png(run) -> None:
    run_dir, summary, _ = run
    out = run_dir / "eval" / "top"
    metrics = evaluate(
        run_dir / summary["checkpoint"], output_dir=out, top_losses=4, progress=False
    )
    for name in ("top_losses", "confusion_matrix"):
        path = Path(metrics["files"][name])
        assert path.parent == out and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    losses = sorted((float(r["loss"]) for r in rows), reverse=True)
    # The grid shows the highest losses; the CSV holds the numbers behind it.
    assert losses[0] >= losses[3] > 0


def test_other_folder_is_evaluated_whole_by_class_name(run, tmp_path: Path) -> None:
    run_dir, summary, root = run
    other = tmp_path / "new_photos"
    shutil.copytree(root / "val" / "class_2", other / "class_2")  # one class only, flat layout
    (other / "class_2" / "broken.png").write_bytes(b"\x89PNG broken")
    metrics = evaluate(run_dir / summary["checkpoint"], root=other, progress=False)
    assert metrics["split"] == "all" and metrics["num_images"] == 3
    assert list(metrics["skipped_files"]) == [str(other / "class_2" / "broken.png")]
    assert metrics["per_class"]["class_2"]["support"] == 3
    assert metrics["per_class"]["class_0"]["support"] == 0
    assert Path(metrics["files"]["metrics"]).parent == run_dir / "eval" / "new_photos-all"


def test_unknown_class_folder_is_a_clear_error(run, tmp_path: Path) -> None:
    run_dir, summary, _ = run
    make_image_folder(tmp_path / "zoo", {"class_0": 2, "giraffe": 2}, ())
    with pytest.raises(DataError, match=r"\['giraffe'\] that the checkpoint does not know"):
        evaluate(run_dir / summary["checkpoint"], root=tmp_path / "zoo", progress=False)


def test_files_the_run_trained_without_stay_out_of_its_evaluation(tmp_path: Path) -> None:
    """data.exclude is recorded in the checkpoint: evaluate leaves the same files out (a leaked
    test copy an audit found must not count), `exclude=None` takes every image back, and a list
    that is gone since is an error naming both ways out."""
    root = make_image_folder(tmp_path / "images", (6, 6), ("train", "val", "test"))
    leaked = sorted((root / "test" / "class_1").iterdir())[0]
    listed = tmp_path / "drop.txt"
    listed.write_text(f"{leaked}\n")
    overrides = ["strategy=full", "debug=limit", "trainer.max_epochs=1", "~logger"]
    cfg = tiny_cfg(tmp_path, [*overrides, f"data.exclude={listed}"], data_root=root)
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    ckpt = run_dir / json.loads((run_dir / "summary.json").read_text())["checkpoint"]
    num_test = len(list((root / "test").rglob("*.png")))

    metrics = evaluate(ckpt, progress=False)
    assert metrics["split"] == "test" and metrics["num_images"] == num_test - 1
    assert metrics["excluded_files"] == {"source": str(listed), "count": 1, "files": [str(leaked)]}
    rows = list(csv.DictReader(Path(metrics["files"]["predictions"]).open()))
    assert str(leaked) not in {r["path"] for r in rows}

    every = evaluate(ckpt, exclude=None, progress=False)
    assert every["num_images"] == num_test and every["excluded_files"] is None

    listed.unlink()
    with pytest.raises(DataError, match=r"(?s)trained with data.exclude=.*data.exclude=null"):
        evaluate(ckpt, progress=False)
