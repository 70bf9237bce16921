"""A training run calibrates best.ckpt and leaves its mistakes; predict, evaluate and the ONNX
graph use the temperature; TTA and min_confidence keep predict's output format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image_folder, tiny_cfg
from thawkit.finetune.calibration import write_temperature
from thawkit.inference.evaluate import evaluate
from thawkit.inference.export import export
from thawkit.inference.predict import load_checkpoint, predict, predict_probabilities
from thawkit.inference.tta import resolve_views, tta_logits
from thawkit.run.train import build

TEMPERATURE = 2.5  # planted in a copy of best.ckpt: far from what the tiny run fits


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """One tiny training run (with its TensorBoard log) and a copy of its best.ckpt with T=2.5."""
    tmp = tmp_path_factory.mktemp("calibrated")
    root = make_image_folder(tmp / "images", (12, 12, 10), ("train", "val"))
    cfg = tiny_cfg(tmp, ["strategy=full", "debug=limit", "trainer.max_epochs=1"], data_root=root)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    run_dir = tmp / "run"
    planted = run_dir / "checkpoints" / "planted.ckpt"
    planted.write_bytes((run_dir / "checkpoints" / "best.ckpt").read_bytes())
    write_temperature(planted, TEMPERATURE)
    return run_dir, root, planted


def test_training_run_records_calibration_and_mistakes(run) -> None:
    run_dir, root, _ = run
    summary = json.loads((run_dir / "summary.json").read_text())
    cal = summary["calibration"]
    assert {"temperature", "nll_before", "nll_after", "ece_before", "ece_after"} <= set(cal)
    assert cal["nll_after"] <= cal["nll_before"] and cal["bins"] == 15
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert float(best["state_dict"]["temperature"]) == pytest.approx(cal["temperature"])
    mistakes = summary["mistakes"]
    n_val = len(list((root / "val").rglob("*.png")))
    assert mistakes["num_images"] == n_val and len(mistakes["top_losses"]) == min(16, n_val)
    losses = [r["loss"] for r in mistakes["top_losses"]]
    assert losses == sorted(losses, reverse=True)
    assert sum(p["count"] for p in mistakes["confused_pairs"]) <= mistakes["misclassified"]
    for name in ("reliability", "top_losses", "confused_pairs"):
        assert (run_dir / "plots" / f"{name}.png").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))[:1]
    acc = EventAccumulator(str(events), size_guidance={"images": 0}).Reload()
    assert {"val/reliability", "val/top_losses"} <= set(acc.Tags()["images"])
    assert "calibration/ece_after" in acc.Tags()["scalars"]


def test_temperature_survives_load_and_scales_predict(run) -> None:
    _, root, planted = run
    loaded = load_checkpoint(planted)
    assert float(loaded.module.temperature) == pytest.approx(TEMPERATURE)
    paths = sorted((root / "val").rglob("*.png"))
    probs, _ = predict_probabilities(loaded, paths, progress=False)
    x = torch.stack([loaded.transform(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        raw = loaded.module(x)
    torch.testing.assert_close(probs, (raw / TEMPERATURE).softmax(1), atol=1e-6, rtol=0)
    metrics = evaluate(planted, root, split="val", output_dir=root.parent / "eval", progress=False)
    assert metrics["temperature"] == pytest.approx(TEMPERATURE) and 0 <= metrics["ece"] <= 1


@pytest.mark.slow  # an ONNX export (~30 s here); the fast test_export plants a temperature too
def test_onnx_probabilities_equal_predicts(run, tmp_path: Path) -> None:
    import onnxruntime as ort

    _, root, planted = run
    path = export(planted, "onnx", output=tmp_path / "m.onnx")["path"]
    loaded = load_checkpoint(planted)
    paths = sorted((root / "val").rglob("*.png"))
    expected, _ = predict_probabilities(loaded, paths, progress=False)
    x = torch.stack([loaded.transform(Image.open(p).convert("RGB")) for p in paths])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": x.numpy()})[0]
    got = torch.from_numpy(logits).softmax(1)
    assert float((got - expected).abs().max()) < 1e-5


def test_tta_none_is_plain_and_flip_of_a_symmetric_image_is_plain(run, tmp_path: Path) -> None:
    _, _, planted = run
    loaded = load_checkpoint(planted)
    rng = np.random.default_rng(0)
    half = rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)
    image = tmp_path / "symmetric.png"
    Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1)).save(image)
    plain, _ = predict_probabilities(loaded, [image], progress=False)
    none, _ = predict_probabilities(loaded, [image], progress=False, tta="none")
    flip, _ = predict_probabilities(loaded, [image], progress=False, tta="flip")
    assert torch.equal(plain, none)
    torch.testing.assert_close(flip, plain, atol=1e-5, rtol=0)
    five, _ = predict_probabilities(loaded, [image], progress=False, tta=["flip", "five_crop"])
    assert five.shape == plain.shape and torch.isfinite(five).all()
    # The views themselves: a symmetric batch's mirror is itself, five_crop gives five views.
    x = torch.randn(2, 3, 8, 4)
    x = torch.cat([x, x.flip(-1)], dim=-1)
    assert torch.equal(tta_logits(lambda v: v, x, resolve_views("flip"), 8), x)
    assert len(resolve_views("five_crop")) == 5 and resolve_views(["flip", "flip"]) == (
        "center",
        "hflip",
    )
    with pytest.raises(ValueError, match="neither a preset"):
        resolve_views("rotate")


def test_min_confidence_marks_uncertain_rows(run, tmp_path: Path) -> None:
    _, root, planted = run
    out = tmp_path / "preds.csv"
    predictions, csv_path = predict(
        planted, root / "val", top_k=2, output=out, progress=False, min_confidence=0.999
    )
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[:2] == ["path", "label"]
    # T = 2.5 on a briefly trained model: no probability reaches 0.999.
    assert all(r["label"] == "uncertain" for r in rows) and all(p.uncertain for p in predictions)
    assert all(r["class_1"] for r in rows)  # the ranking is still there
    default, _ = predict(planted, root / "val", output=tmp_path / "plain.csv", progress=False)
    assert "label" not in next(csv.DictReader((tmp_path / "plain.csv").open()))
    assert not any(p.uncertain for p in default)
