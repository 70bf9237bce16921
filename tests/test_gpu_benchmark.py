"""trainer=gpu composes as documented, and benchmarks/gpu.py runs (on the CPU, tiny size)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from conftest import TINY_BACKBONE, make_image_folder, tiny_cfg
from thawkit.data.loaders import MAX_GPU_WORKERS, default_num_workers

GPU_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_trainer_gpu_is_bf16_on_one_device(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, ["trainer=gpu"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.devices == 1
    assert cfg.callbacks.speed.channels_last


def test_workers_are_sized_to_the_host(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert default_num_workers(gpu=False) == 4
    assert default_num_workers(gpu=True) == MAX_GPU_WORKERS
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_num_workers(gpu=True) == 1


def test_gpu_benchmark_runs_on_cpu_at_tiny_size(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", (8, 8), ("train", "val"))
    spec = importlib.util.spec_from_file_location("gpu_benchmark", GPU_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "gpu.json"
    results = script.main([
        "--data", str(data), "--device", "cpu", "--backbone", TINY_BACKBONE, "--weights",
        "none", "--size", "32", "--batch-size", "8", "--epochs", "1", "--strategies",
        "feature_extraction", "--out", str(out),
    ])  # fmt: skip
    assert set(results) == {"bare loop (full)", "thawkit feature_extraction"}
    for r in results.values():
        assert r["images_per_s"] > 0 and 0 <= r["data_wait"] <= 1
    assert out.is_file()
