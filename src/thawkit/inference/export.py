"""Export a checkpoint for deployment: `python export.py ckpt=PATH format=onnx|torchscript`.

The exported model takes a float32 NCHW batch of any size (dynamic batch axis) of normalised
RGB images and returns logits. It carries its metadata (class names, preprocessing, image
size; see `LoadedModel.metadata`) inside the file: ONNX in `metadata_props` (key `thawkit`,
JSON; onnxruntime: `session.get_modelmeta().custom_metadata_map`), TorchScript as the extra
file `thawkit.json`. `read_metadata` reads either back.

ONNX goes through torch's `torch.export`-based exporter and is checked against PyTorch with
onnxruntime at batch sizes other than the example's before the file is kept.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from thawkit.config import schema as _schema  # noqa: F401 - registers its config schema
from thawkit.console import quiet_loggers
from thawkit.inference.predict import LoadedModel, load_checkpoint

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
METADATA_KEY = "thawkit"
EXTRA_FILE = "thawkit.json"
CHECK_BATCH_SIZES = (1, 3)  # other than the export example's 2: proves the batch axis is free


class ExportError(RuntimeError):
    """The exported model is not usable or does not match PyTorch."""


class Classifier(nn.Module):
    """Backbone + head as one plain module: images in, calibrated logits out.

    The logits are divided by the checkpoint's temperature (thawkit.finetune.calibration)
    inside the graph, so softmax of an exported model's output is predict.py's probability, and
    any graph built from this module (ONNX, TorchScript, a quantized copy) carries it.
    """

    def __init__(self, model: LoadedModel) -> None:
        super().__init__()
        self.backbone = model.module.backbone
        self.head = model.module.head
        self.register_buffer("temperature", model.module.temperature.detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images)) / self.temperature


def _example(model: LoadedModel, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, model.image_size, model.image_size, generator=generator)


def _check(
    name: str, run: Any, reference: nn.Module, model: LoadedModel, atol: float, rtol: float
) -> float:
    """Largest |exported - PyTorch| logit difference over some batch sizes; raise if too large."""
    worst = 0.0
    for batch in CHECK_BATCH_SIZES:
        x = _example(model, batch)
        with torch.no_grad():
            expected = reference(x).numpy()
        got = np.asarray(run(x))
        if got.shape != expected.shape:
            raise ExportError(
                f"{name} gives shape {got.shape} for a batch of {batch}, PyTorch {expected.shape}"
            )
        worst = max(worst, float(np.abs(got - expected).max()))
        if not np.allclose(got, expected, atol=atol, rtol=rtol):
            raise ExportError(
                f"{name} differs from PyTorch by up to {worst:.2e} at batch {batch} "
                f"(tolerance atol={atol}, rtol={rtol})"
            )
    return worst


def export_onnx(
    model: LoadedModel, path: Path, opset: int | None = None, atol: float = 1e-4, rtol: float = 1e-4
) -> float:
    """Write an ONNX model with a dynamic batch axis and metadata; check it with onnxruntime.

    Returns:
        The largest logit difference from PyTorch that onnxruntime showed.
    """
    import onnx
    import onnxruntime as ort

    classifier = Classifier(model).eval()
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), quiet_loggers("onnxscript", "onnx_ir", "torch.onnx"):
        warnings.simplefilter("ignore", DeprecationWarning)
        program = torch.onnx.export(
            classifier,
            (_example(model),),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            verbose=False,
        )
    proto = program.model_proto
    del proto.metadata_props[:]
    meta = model.metadata()
    for key, value in {
        METADATA_KEY: json.dumps(meta),
        "class_names": json.dumps(meta["class_names"]),
    }.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    try:
        return _check(
            "ONNX (onnxruntime)",
            lambda x: session.run(None, {"images": x.numpy()})[0],
            classifier,
            model,
            atol,
            rtol,
        )
    except ExportError:
        path.unlink(missing_ok=True)  # never leave a file that disagrees with the model
        raise


def export_torchscript(
    model: LoadedModel, path: Path, atol: float = 1e-4, rtol: float = 1e-4
) -> float:
    """Write a traced TorchScript model with `thawkit.json` metadata; check it against eager.

    Returns:
        The largest logit difference from PyTorch after loading the saved file.
    """
    classifier = Classifier(model).eval()
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it is still the format that
        # LibTorch (C++) and mobile runtimes load, which is what users ask it for.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated")
        with torch.no_grad():
            # Our own check below (saved file, other batch sizes) replaces trace's re-run.
            traced = torch.jit.trace(classifier, _example(model), check_trace=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: json.dumps(model.metadata())})
        loaded = torch.jit.load(str(path), map_location="cpu")
    try:
        return _check(
            "TorchScript", lambda x: loaded(x).detach().numpy(), classifier, model, atol, rtol
        )
    except ExportError:
        path.unlink(missing_ok=True)  # never leave a file that disagrees with the model
        raise


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The thawkit metadata (class names, preprocessing, ...) stored in an exported model."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
        if METADATA_KEY not in props:
            raise ExportError(
                f"{path} carries no {METADATA_KEY!r} metadata: not exported by thawkit"
            )
        return json.loads(props[METADATA_KEY])
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated")
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[EXTRA_FILE]:
        raise ExportError(f"{path} carries no {EXTRA_FILE}: not exported by thawkit")
    return json.loads(extra[EXTRA_FILE])


# What one export writes into its folder (thawkit.inference.export_report writes the last two).
COMPANIONS = ("export.json", "model_card.md")


def _output_path(model: LoadedModel, format: str, output: str | os.PathLike | None) -> Path:
    """Where this export goes, never over an earlier export: the default is the first free
    folder of `<run dir>/export`, `export-2`, ...; a given `output=` must not exist yet."""
    name = model.path.stem + FORMATS[format]
    if output:
        path = Path(output)
        taken = [p for p in (path, *(path.parent / c for c in COMPANIONS)) if p.exists()]
        if taken:
            raise ExportError(
                f"output={path}: {taken[0]} already exists and export never overwrites. "
                "Give another output= (a new folder), or move the earlier export away"
            )
        return path
    folder, n = model.run_dir / "export", 1
    while folder.exists() and any((folder / c).exists() for c in (name, *COMPANIONS)):
        n += 1
        folder = model.run_dir / f"export-{n}"
    return folder / name


def export(
    ckpt: str | os.PathLike,
    format: str = "onnx",
    output: str | os.PathLike | None = None,
    opset: int | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> dict[str, Any]:
    """Export a checkpoint to ONNX or TorchScript, checked against PyTorch.

    Args:
        ckpt: a thawkit checkpoint.
        format: `onnx` or `torchscript`.
        output: the file (must not exist yet); None = `<run dir>/export/<ckpt name>.onnx`
            (`.torchscript.pt`), or `export-2/`, `export-3/`, ... when an earlier export is there.
        opset: ONNX opset; None = the exporter's default.
        atol, rtol: largest allowed difference of exported from PyTorch logits.

    Returns:
        `{"path", "format", "max_abs_diff", "metadata"}`.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not one of {sorted(FORMATS)}")
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol={atol} and rtol={rtol} must be >= 0")
    model = load_checkpoint(ckpt, "cpu")
    path = _output_path(model, format, output)
    if format == "onnx":
        diff = export_onnx(model, path, opset, atol, rtol)
    else:
        diff = export_torchscript(model, path, atol, rtol)
    log.info("Exported %s to %s (max |diff| from PyTorch %.2e)", model.path, path, diff)
    return {"path": path, "format": format, "max_abs_diff": diff, "metadata": model.metadata()}


def main(cfg: DictConfig) -> dict[str, Any]:
    """The `export.py` entry (src/thawkit/conf/export.yaml)."""
    from thawkit.inference import export_report

    export_report.check_options(cfg)
    result = export(cfg.ckpt, cfg.format, cfg.output, cfg.opset, cfg.atol, cfg.rtol)
    meta = result["metadata"]
    print(
        f"Wrote {result['path']} ({result['format']}, dynamic batch, {meta['image_size']} px, "
        f"{meta['num_classes']} classes); max |logit diff| from PyTorch "
        f"{result['max_abs_diff']:.2e}"
    )
    result["record"] = export_report.finish_export(cfg, result)
    print("\n".join(export_report.summary_lines(result["record"])))
    return result
