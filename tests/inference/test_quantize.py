"""int8 export: loads in onnxruntime, agrees with fp32, records both accuracies; the model card
holds the run's own numbers."""

from __future__ import annotations

import json
import shutil

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from conftest import CONF_DIR, make_image_folder, tiny_cfg
from thawkit.inference.export import main as export_main
from thawkit.inference.export_report import finish_export
from thawkit.inference.model_card import recall_from_matrix
from thawkit.inference.quantize import onnx_logits, onnx_session, stratified_draw
from thawkit.run.train import build


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """A trained tiny run dir (summary.json, .hydra/overrides.yaml) and its checkpoint."""
    tmp = tmp_path_factory.mktemp("quantize")
    root = make_image_folder(tmp / "images", (24, 24), ("train", "val"))
    overrides = ["strategy=full", "trainer.max_epochs=3", "~logger", "model.lr=0.01"]
    cfg = tiny_cfg(tmp, overrides, data_root=root)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    run_dir = tmp / "run"
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in [*overrides, f"data.root={root}"])
    )
    path = run_dir / "checkpoints" / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return run_dir, path, root


def _cfg(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("export", list(overrides))


def _export(*overrides: str) -> dict:
    return export_main(_cfg(*overrides))


@pytest.fixture(scope="module")
def exported(run):
    run_dir, ckpt, _ = run
    return _export(f"ckpt={ckpt}", "quantize=int8", "calibration_images=16")


def test_int8_loads_agrees_with_fp32_and_export_json_holds_both_accuracies(run, exported):
    run_dir, _, root = run
    record = json.loads((run_dir / "export" / "export.json").read_text())
    q = record["int8"]
    assert q["method"] == "static" and q["calibration_images"] == 16
    assert q["path"].endswith("tiny.int8.onnx") and q["size_bytes"] < record["size_bytes"]
    assert 0 <= q["accuracy_fp32"] <= 1 and 0 <= q["accuracy_int8"] <= 1
    assert q["accuracy_drop"] == pytest.approx(q["accuracy_fp32"] - q["accuracy_int8"])
    assert q["eval_split"] == "val" and q["eval_images"] == 16
    assert q["meets_max_accuracy_drop"] == (q["accuracy_drop"] <= 0.01)
    # A generated set the model never saw: the int8 file's top-1 agrees with fp32's.
    fresh = make_image_folder(run_dir.parent / "fresh", {"a": 30, "b": 30}, ())
    paths = sorted(fresh.rglob("*.png"))
    from thawkit.inference.predict import load_checkpoint

    transform = load_checkpoint(record["ckpt"]).transform
    fp32, _ = onnx_logits(onnx_session(record["path"]), paths, transform)
    int8, _ = onnx_logits(onnx_session(q["path"]), paths, transform)
    assert int8.shape == fp32.shape == (60, 2)
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.95


def test_dynamic_fallback_without_images_and_a_drop_above_the_limit_warns(
    run, exported, caplog, tmp_path
) -> None:
    _, ckpt, _ = run
    out = tmp_path / "m.onnx"
    shutil.copy(exported["path"], out)  # the checked fp32 file: one torch export per module
    cfg = _cfg(
        f"ckpt={ckpt}", f"output={out}", "quantize=int8", "calibration_images=0",
        "max_accuracy_drop=0", "benchmark=true", "bench_runs=2", "bench_warmup=1",
        "bench_batch_sizes=[1,4]",
    )  # fmt: skip
    result = {"path": out, "format": "onnx", "max_abs_diff": exported["max_abs_diff"]}
    record = finish_export(cfg, result)
    assert record["int8"]["method"] == "dynamic" and (tmp_path / "m.int8.onnx").is_file()
    assert record["int8"]["calibration"] == "calibration_images=0"
    rows = {(r["runtime"], r["batch"]) for r in record["benchmark"]["rows"]}
    assert rows == {(rt, b) for rt in ("pytorch_eager", "onnx_fp32", "onnx_int8") for b in (1, 4)}
    assert record["benchmark"]["threads"] >= 1
    assert json.loads((tmp_path / "export.json").read_text())["benchmark"] == record["benchmark"]
    if record["int8"]["accuracy_drop"] > 0:
        assert "more than max_accuracy_drop=0" in caplog.text


def test_the_model_card_holds_the_runs_real_numbers(run, exported):
    run_dir, _, root = run
    card = (run_dir / "export" / "model_card.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    record = json.loads((run_dir / "export" / "export.json").read_text())
    best = summary["best"]
    assert f"Best epoch {best['epoch']}" in card
    assert f"val/acc {best['val/acc']:.4f}" in card and f"val/loss {best['val/loss']:.4f}" in card
    recall = next(h for h in summary["history"] if h["epoch"] == best["epoch"])
    for name, value in recall["val/recall_per_class"].items():
        assert f"| {name} | {value:.4f} |" in card
    for name, n in summary["class_counts"]["train"].items():
        assert f"| {name} | {n} | {summary['class_counts']['val'][name]} |" in card
    assert summary["diagnosis"] in card and f"Strategy `{summary['strategy']}`" in card
    q = record["int8"]
    assert f"accuracy fp32 {q['accuracy_fp32']:.4f}, int8 {q['accuracy_int8']:.4f}" in card
    assert "python train.py strategy=full trainer.max_epochs=3 '~logger' model.lr=0.01" in card
    assert f"data.root={root}" in card
    assert "Classes with fewer than 20 training images" not in card  # 24 each


def test_stratified_draw_keeps_every_class_and_is_seeded() -> None:
    samples = [(f"a{i}", 0) for i in range(90)] + [(f"b{i}", 1) for i in range(10)]
    draw = stratified_draw(samples, 20, seed=3)
    assert len(draw) == 20 and sum(y for _, y in draw) == 2
    assert draw == stratified_draw(samples, 20, seed=3) != stratified_draw(samples, 20, seed=4)
    assert len({y for _, y in stratified_draw(samples, 2)}) == 2
    assert recall_from_matrix([[3, 1], [0, 0]], ["x", "y"]) == {"x": 0.75, "y": None}


def test_bad_options_are_refused_before_anything_is_written(run, tmp_path) -> None:
    _, ckpt, _ = run
    with pytest.raises(ValueError, match="quantize=int8 needs format=onnx"):
        _export(f"ckpt={ckpt}", "format=torchscript", "quantize=int8")
    with pytest.raises(ValueError, match="quantize='int4' is not one of"):
        _export(f"ckpt={ckpt}", "quantize=int4")
    assert not list(tmp_path.iterdir())
