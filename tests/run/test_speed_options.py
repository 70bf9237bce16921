"""Each speed option leaves results within a stated tolerance; loader settings suit the machine.

Tolerances (full fine-tuning of the tiny backbone, 2 epochs, SGD, no augmentation):
- image cache: identical results (evaluation inputs are bit-identical, training inputs too
  without augmentation): parameters within 1e-6.
- channels_last: other convolution kernels, same maths: parameters within 1e-4, val loss
  within 1e-4.
- bf16 autocast: bfloat16 keeps 8 bits of mantissa: val loss within 0.05, val accuracy within
  one image of 8.
- torch.compile (slow test): parameters within 1e-4.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from thawkit.data.loaders import default_num_workers
from thawkit.run.speed import SpeedOptions
from thawkit.run.train import build

BASE = (
    "strategy=full",
    "augment=none",
    "optimizer=sgd",
    "callbacks.speed.feature_cache=false",
    "callbacks.speed.image_cache_mb=0",
    "callbacks.speed.channels_last=false",
)


def _fit(cfg):
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return model, metrics, datamodule


def _max_param_diff(a, b) -> float:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return max(
        float((x.float() - y.float()).abs().max()) for x, y in pairs if x.is_floating_point()
    )


@pytest.fixture
def baseline(make_cfg):
    return _fit(make_cfg(*BASE))


def test_image_cache_changes_nothing(make_cfg, baseline) -> None:
    model, metrics, datamodule = _fit(make_cfg(*BASE, "callbacks.speed.image_cache_mb=64"))
    assert datamodule.image_cache is not None and len(datamodule.image_cache) > 0
    assert _max_param_diff(model, baseline[0]) <= 1e-6
    assert metrics["val/loss"] == pytest.approx(baseline[1]["val/loss"], abs=1e-6)


def test_channels_last_stays_within_tolerance(make_cfg, baseline) -> None:
    model, metrics, _ = _fit(make_cfg(*BASE, "callbacks.speed.channels_last=true"))
    conv = model.backbone.model.conv_stem.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert _max_param_diff(model, baseline[0]) <= 1e-4
    assert metrics["val/loss"] == pytest.approx(baseline[1]["val/loss"], abs=1e-4)


def test_bf16_autocast_stays_within_tolerance(make_cfg, baseline) -> None:
    _, metrics, _ = _fit(make_cfg(*BASE, "trainer.precision=bf16-mixed"))
    assert metrics["val/loss"] == pytest.approx(baseline[1]["val/loss"], abs=0.05)
    assert abs(metrics["val/acc"] - baseline[1]["val/acc"]) <= 1 / 8 + 1e-6


def test_feature_cache_under_bf16_matches_the_full_forward(make_cfg) -> None:
    """Extraction runs in the trainer's precision context, so cached features are the ones
    the autocast forward would give."""
    common = (
        "strategy=feature_extraction",
        "augment=none",
        "trainer.precision=bf16-mixed",
        "callbacks.speed.image_cache_mb=0",
        "callbacks.speed.channels_last=false",
    )
    cached, _, _ = _fit(make_cfg(*common, "callbacks.speed.feature_cache=true"))
    full, _, _ = _fit(make_cfg(*common, "callbacks.speed.feature_cache=false"))
    assert _max_param_diff(cached.head, full.head) <= 1e-5


@pytest.mark.slow
def test_compile_stays_within_tolerance(make_cfg, baseline) -> None:
    model, metrics, _ = _fit(make_cfg(*BASE, "callbacks.speed.compile=true"))
    assert _max_param_diff(model, baseline[0]) <= 1e-4
    assert metrics["val/loss"] == pytest.approx(baseline[1]["val/loss"], abs=1e-4)


def test_threads_option_sets_torch_threads(make_cfg) -> None:
    before = torch.get_num_threads()
    try:
        datamodule, model, trainer = build(make_cfg(*BASE, "callbacks.speed.threads=1"))
        speed = next(c for c in trainer.callbacks if isinstance(c, SpeedOptions))
        torch.set_num_threads(2)
        speed.setup(trainer, model, "fit")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="callbacks.speed.threads"):
        SpeedOptions(threads=0)


def test_speed_off_turns_every_option_off(make_cfg) -> None:
    _, _, trainer = build(make_cfg("speed=off"))
    speed = next(c for c in trainer.callbacks if isinstance(c, SpeedOptions))
    assert speed.features is None and speed.image_cache_mb == 0
    assert not speed.channels_last and not speed.compile


def test_loader_settings_suit_the_machine(make_cfg, monkeypatch) -> None:
    # Workers: one core left to training, at most 4 on CPU (16 with a GPU); none on one core.
    for cores, workers, gpu_workers in ((1, 0, 0), (2, 1, 1), (4, 3, 3), (16, 4, 15), (32, 4, 16)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert default_num_workers(gpu=False) == workers
        assert default_num_workers(gpu=True) == gpu_workers
    monkeypatch.undo()
    datamodule, _, _ = build(make_cfg())
    datamodule.num_workers = 2  # (the test config pins 0)
    loader = datamodule.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers
    assert loader.pin_memory is torch.cuda.is_available()  # pinned memory only with a GPU
    loader.worker_init_fn(0)  # what each worker runs first: one torch thread
    try:
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)


def test_thawkit_shortens_openmp_spinning_unless_told_otherwise() -> None:
    code = "import os, thawkit; print(os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")  # this checkout's
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "10000", out.stderr
    env["GOMP_SPINCOUNT"] = "300000"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "300000", out.stderr
    del env["GOMP_SPINCOUNT"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    code = "import os, thawkit; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "None", out.stderr
