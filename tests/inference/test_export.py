"""Export: ONNX and TorchScript match PyTorch within 1e-4 at any batch size and carry metadata."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF_DIR, make_image_folder, tiny_cfg
from thawkit.finetune.calibration import write_temperature
from thawkit.inference.export import ExportError, export, read_metadata
from thawkit.inference.export import main as export_main
from thawkit.inference.predict import load_checkpoint
from thawkit.run.train import build

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("export")
    root = make_image_folder(tmp / "images", (12, 12), ("train", "val"))
    cfg = tiny_cfg(
        tmp, ["strategy=full", "debug=limit", "trainer.max_epochs=1", "~logger"], data_root=root
    )
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    path = tmp / "run" / "checkpoints" / "model.ckpt"
    trainer.save_checkpoint(path)
    write_temperature(path, 2.5)  # the exported graph must divide by it
    return path


def _reference(ckpt, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    loaded = load_checkpoint(ckpt)
    x = torch.randn(batch, 3, loaded.image_size, loaded.image_size)
    with torch.no_grad():
        return x, loaded.module.calibrated_logits(x)


def _check_metadata(meta: dict) -> None:
    assert meta["class_names"] == ["class_0", "class_1"] and meta["num_classes"] == 2
    assert meta["image_size"] == 32
    pre = meta["preprocessing"]
    assert {"mean", "std", "interpolation", "crop_pct", "resize"} <= set(pre)
    assert len(pre["mean"]) == 3 and pre["resize"] >= 32
    assert "logits" in meta["output"]


def test_onnx_round_trip_dynamic_batch_and_metadata(ckpt) -> None:
    import onnxruntime as ort

    result = export(ckpt, "onnx")
    path = result["path"]
    assert path == ckpt.parents[1] / "export" / "model.onnx" and path.is_file()
    assert result["max_abs_diff"] < TOLERANCE
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [inp] = session.get_inputs()
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 32, 32]
    for batch in (1, 5):
        x, expected = _reference(ckpt, batch)
        got = session.run(None, {inp.name: x.numpy()})[0]
        assert got.shape == (batch, 2)
        assert np.abs(got - expected.numpy()).max() < TOLERANCE
    meta = json.loads(session.get_modelmeta().custom_metadata_map["thawkit"])
    _check_metadata(meta)
    assert read_metadata(path) == meta


def test_torchscript_round_trip_dynamic_batch_and_metadata(ckpt, tmp_path) -> None:
    GlobalHydra.instance().clear()
    out = tmp_path / "model.pt"
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("export", [f"ckpt={ckpt}", "format=torchscript", f"output={out}"])
    result = export_main(cfg)
    assert result["path"] == out and result["max_abs_diff"] < TOLERANCE
    extra = {"thawkit.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated")
        scripted = torch.jit.load(str(out), _extra_files=extra)
    for batch in (1, 5):
        x, expected = _reference(ckpt, batch)
        assert (scripted(x) - expected).abs().max() < TOLERANCE
    meta = json.loads(extra["thawkit.json"])
    _check_metadata(meta)
    assert read_metadata(out) == meta


def test_a_second_export_never_overwrites_the_first(ckpt, tmp_path) -> None:
    first = export(ckpt, "torchscript")["path"]
    before = first.read_bytes()
    second = export(ckpt, "torchscript")["path"]
    assert first.parent.name.startswith("export") and second.parent.name != first.parent.name
    assert second.name == first.name and first.read_bytes() == before
    taken = tmp_path / "taken.pt"
    taken.write_bytes(b"an earlier file")
    with pytest.raises(ExportError, match=r"already exists and export never overwrites"):
        export(ckpt, "torchscript", taken)
    assert taken.read_bytes() == b"an earlier file"


def test_mismatch_fails_the_export(ckpt, tmp_path, monkeypatch) -> None:
    load = torch.jit.load

    def off_by_a_little(*args, **kwargs):  # an exported model 2e-4 away from PyTorch
        module = load(*args, **kwargs)
        return lambda x: module(x) + 2e-4

    monkeypatch.setattr(torch.jit, "load", off_by_a_little)
    out = tmp_path / "bad.pt"
    with pytest.raises(ExportError, match="differs from PyTorch by up to 2.0"):
        export(ckpt, "torchscript", out)
    assert not out.exists()
    with pytest.raises(ValueError, match="format='tflite' is not one of"):
        export(ckpt, "tflite")


@pytest.mark.slow
def test_real_backbone_exports_within_tolerance(tmp_path_factory: pytest.TempPathFactory) -> None:
    """EfficientNet-Lite0 with its bundled ImageNet weights at its own 224 px."""
    tmp = tmp_path_factory.mktemp("export_real")
    root = make_image_folder(tmp / "images", (6, 6), ("train", "val"))
    overrides = [
        "strategy=full",
        "debug=limit",
        "trainer.max_epochs=1",
        "~logger",
        "model.backbone=tf_efficientnet_lite0",
        "model.weights=bundled",
        "data.image_size=224",
    ]
    datamodule, model, trainer = build(tiny_cfg(tmp, overrides, data_root=root))
    trainer.fit(model, datamodule=datamodule)
    path = tmp / "lite0.ckpt"
    trainer.save_checkpoint(path)
    for fmt in ("onnx", "torchscript"):
        result = export(path, fmt)
        assert result["max_abs_diff"] < TOLERANCE, fmt
        assert read_metadata(result["path"])["image_size"] == 224
