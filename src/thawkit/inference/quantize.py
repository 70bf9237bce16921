"""int8 ONNX from the fp32 export, and its accuracy cost measured on the model's own images.

The int8 model is made from the fp32 ONNX file that `thawkit.inference.export` wrote and
checked, not from PyTorch again: whatever that graph computes (the head, a calibration
temperature in the module's inference forward) is in both files. Static quantization (QDQ:
onnxruntime's `quantize_static`) needs activation ranges; they are measured on a stratified,
seeded draw of the training images, prepared exactly as the model was validated (the
checkpoint's own evaluation transform). Without images, dynamic quantization (weights only,
activations quantized at run time) is the fallback. Either way both files are then scored side
by side on the validation (or test) split, and the drop in accuracy is compared with
`max_accuracy_drop`.
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thawkit.data.folder import DataError, Sample, load_rgb
from thawkit.inference.evaluate import select_samples
from thawkit.inference.predict import LoadedModel

log = logging.getLogger(__name__)

INPUT = "images"  # the input name export_onnx gives the graph


def stratified_draw(samples: Sequence[Sample], n: int, seed: int = 0) -> list[Sample]:
    """`n` samples (all if fewer), every class in proportion to its share, each class at
    least once while `n` allows; the same draw for the same seed."""
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_class[sample[1]].append(sample)
    if n >= len(samples):
        return list(samples)
    rng = random.Random(seed)
    total = len(samples)
    quota = {c: max(1, round(n * len(s) / total)) for c, s in sorted(by_class.items())}
    while sum(quota.values()) > n:  # rounding up small classes can overshoot: trim the largest
        largest = max(quota, key=lambda c: (quota[c], c))
        quota[largest] -= 1
    drawn = []
    for c, members in sorted(by_class.items()):
        drawn += rng.sample(members, min(quota[c], len(members)))
    return drawn


def image_batches(
    paths: Sequence[Path], transform: Any, batch_size: int = 16
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Prepared float32 NCHW batches and the positions in `paths` they hold; unreadable files
    are left out (with a warning)."""
    batch, kept = [], []
    for i, path in enumerate(paths):
        try:
            batch.append(transform(load_rgb(path)).numpy())
            kept.append(i)
        except Exception as e:  # PIL raises many types for broken files
            log.warning("Skipping unreadable image %s (%s)", path, e)
        if len(batch) == batch_size or (i == len(paths) - 1 and batch):
            yield np.stack(batch).astype(np.float32), kept
            batch, kept = [], []


def _calibration_reader(paths: Sequence[Path], transform: Any) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """The calibration images, one prepared batch at a time."""

        def __init__(self) -> None:
            self.batches = image_batches(paths, transform)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.batches, None)
            return None if item is None else {INPUT: item[0]}

    return Reader()


def quantize_onnx(
    fp32: Path, int8: Path, calibration: Sequence[Path] = (), transform: Any = None
) -> str:
    """Write the int8 model of the ONNX file `fp32` to `int8`; returns the method used.

    Args:
        fp32: the checked fp32 export.
        int8: the file to write.
        calibration: images whose activation ranges calibrate static quantization; none =
            dynamic quantization.
        transform: PIL RGB -> normalised tensor (the checkpoint's evaluation transform).

    Returns:
        `static` (QDQ, per-channel int8 weights, uint8 activations) or `dynamic`.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    int8.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # onnxruntime's recommended first step: shape inference and graph optimisation, so the
        # quantizer sees folded BatchNorms and knows every tensor's shape.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        if calibration:
            quantize_static(
                str(prepared),
                str(int8),
                _calibration_reader(calibration, transform),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
            return "static"
        quantize_dynamic(str(prepared), str(int8), weight_type=QuantType.QInt8)
        return "dynamic"


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session; `threads` intra-op threads (None: onnxruntime's choice)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(
    session: Any, paths: Sequence[Path], transform: Any
) -> tuple[np.ndarray, list[int]]:
    """Logits (N, C) of the readable images among `paths`, and their positions in `paths`."""
    logits, kept = [], []
    for x, idx in image_batches(paths, transform, batch_size=32):
        logits.append(session.run(None, {INPUT: x})[0])
        kept += idx
    return (np.concatenate(logits) if logits else np.zeros((0, 0))), kept


def calibration_paths(
    model: LoadedModel, root: str | None, n: int, seed: int
) -> tuple[list[Path], str]:
    """A stratified draw of `n` training images, and a note of where they came from ('' when
    there are none: the checkpoint's folder is gone, or n is 0)."""
    if n <= 0:
        return [], "calibration_images=0"
    try:
        _, _, samples = select_samples(model, root, "train")
    except DataError as e:
        return [], f"no training images ({e})"
    drawn = stratified_draw(samples, n, seed)
    return [Path(p) for p, _ in drawn], f"{len(drawn)} training images"


def compare(
    model: LoadedModel, fp32: Path, int8: Path, root: str | None, split: str
) -> dict[str, Any]:
    """Accuracy of the fp32 and the int8 file on one split, and how often their top-1 agrees.

    Returns `{}` (with a warning) when the split cannot be read.
    """
    try:
        root_used, split, samples = select_samples(model, root, split)
    except DataError as e:
        log.warning("int8 not evaluated: %s. Pass data_root=FOLDER to measure its cost.", e)
        return {}
    if not samples:
        log.warning("int8 not evaluated: the %s split of %s holds no images", split, root_used)
        return {}
    paths = [Path(p) for p, _ in samples]
    labels = np.array([y for _, y in samples])
    out: dict[str, Any] = {"eval_root": str(root_used), "eval_split": split}
    preds = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        logits, kept = onnx_logits(onnx_session(path), paths, model.transform)
        preds[name] = logits.argmax(axis=1)
        out[f"accuracy_{name}"] = float((preds[name] == labels[kept]).mean())
    out["eval_images"] = len(kept)
    out["accuracy_drop"] = out["accuracy_fp32"] - out["accuracy_int8"]
    out["agreement"] = float((preds["fp32"] == preds["int8"]).mean())
    return out


def quantize_and_compare(
    model: LoadedModel,
    fp32: Path,
    int8: Path,
    calibration_images: int = 200,
    data_root: str | None = None,
    split: str = "val",
    max_accuracy_drop: float = 0.01,
    seed: int = 0,
) -> dict[str, Any]:
    """Quantize `fp32` into `int8` and measure the cost; the record export.json keeps."""
    paths, source = calibration_paths(model, data_root, calibration_images, seed)
    if not paths:
        log.warning("int8: %s, so dynamic quantization (no calibration)", source)
    method = quantize_onnx(fp32, int8, paths, model.transform)
    record: dict[str, Any] = {
        "path": str(int8),
        "method": method,
        "calibration": source,
        "calibration_images": len(paths),
        "size_bytes": int8.stat().st_size,
        **compare(model, fp32, int8, data_root, split),
    }
    record["max_accuracy_drop"] = max_accuracy_drop
    drop = record.get("accuracy_drop")
    record["meets_max_accuracy_drop"] = None if drop is None else bool(drop <= max_accuracy_drop)
    if record["meets_max_accuracy_drop"] is False:
        log.warning(
            "int8 loses %.4f accuracy on %s (fp32 %.4f, int8 %.4f), more than "
            "max_accuracy_drop=%s: %s is written, but prefer the fp32 model, or calibrate on "
            "more images (calibration_images=)",
            drop,
            record["eval_split"],
            record["accuracy_fp32"],
            record["accuracy_int8"],
            max_accuracy_drop,
            int8,
        )
    return record
