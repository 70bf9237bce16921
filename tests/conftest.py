"""Shared fixtures: tiny generated image folders and the real Hydra config, shrunk for tests."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

import thawkit

os.environ.setdefault("THAWKIT_OFFLINE", "1")  # tests never touch the network
# The persistent cache (thawkit.data.disk_cache) never lands in the user's ~/.cache: a fresh
# folder per test (the fixture below), and this one for anything that runs outside a test.
os.environ["THAWKIT_CACHE"] = tempfile.mkdtemp(prefix="thawkit-test-cache-")
atexit.register(shutil.rmtree, os.environ["THAWKIT_CACHE"], ignore_errors=True)  # no litter in /tmp
# The tiny test models gain nothing from intra-op threads, and on a small shared machine the
# OpenMP threads spin-wait on each other: one thread made a tiny fit ~10x cheaper in CPU time.
torch.set_num_threads(1)

CONF_DIR = str(thawkit.CONF_DIR)
TINY_BACKBONE = "test_efficientnet"  # timm's 99k-parameter EfficientNet for tests

# Class c draws its pixels around this colour, so a tiny model can learn the folder quickly.
_COLOURS = [(220, 40, 40), (40, 40, 220), (40, 200, 40), (220, 220, 40)]


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_module(name: str) -> ModuleType:
    """`benchmarks/<name>.py` loaded as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_image(path: Path, label: int, size: int = 24, seed: int = 0, mode: str = "RGB") -> Path:
    """A small noisy image whose mean colour depends on `label`."""
    rng = np.random.default_rng(seed)
    base = np.array(_COLOURS[label % len(_COLOURS)], dtype=np.float64)
    arr = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").convert(mode).save(path)
    return path


def make_image_folder(
    root: Path,
    counts: dict[str, int] | Sequence[int] = (12, 12),
    splits: Sequence[str] = ("train", "val"),
    size: int = 24,
) -> Path:
    """Generate `root/<split>/<class>/*.png` (or `root/<class>/` when splits is empty)."""
    if not isinstance(counts, dict):
        counts = {f"class_{i}": n for i, n in enumerate(counts)}
    seed = 0
    for split in splits or ("",):
        for label, (name, n) in enumerate(counts.items()):
            n_split = n if split in ("train", "") else max(2, n // 3)
            for i in range(n_split):
                seed += 1
                write_image(root / split / name / f"{i:03d}.png", label, size, seed)
    return root


@pytest.fixture(autouse=True)
def thawkit_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """Every test's own persistent cache folder: no test sees another's entries."""
    path = tmp_path_factory.mktemp("thawkit-cache")
    monkeypatch.setenv("THAWKIT_CACHE", str(path))
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images", (12, 12), ("train", "val", "test"))


def tiny_cfg(
    tmp_path: Path, overrides: Sequence[str] = (), data_root: Path | None = None
) -> DictConfig:
    """Compose the real config with `overrides`, then shrink it: CPU, tiny backbone, 2 epochs."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.data.num_workers = 0
        if "data.root" not in given:
            cfg.data.root = str(data_root) if data_root else None
        cfg.data.digits_root = str(tmp_path / "digits")
        if "data.image_size" not in given:
            cfg.data.image_size = 32
        if "data.batch_size" not in given:
            cfg.data.batch_size = 8
        if "model.backbone" not in given:
            cfg.model.backbone = TINY_BACKBONE
        if "model.weights" not in given:
            cfg.model.weights = "none"
        cfg.trainer.accelerator = "cpu"
        if "trainer.max_epochs" not in given:
            cfg.trainer.max_epochs = 2
        cfg.trainer.enable_progress_bar = False
        cfg.callbacks.progress_bar = None
        cfg.trainer.log_every_n_steps = 1
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path, image_folder: Path) -> Callable[..., DictConfig]:
    """`make_cfg("strategy=gradual", ...)`: the shrunk config on the generated image folder."""

    def make(*overrides: str) -> DictConfig:
        return tiny_cfg(tmp_path, overrides, data_root=image_folder)

    return make


def hymenoptera_root() -> Path | None:
    """`shared/data/hymenoptera` beside the checkout (`../shared`), or beside a parent folder
    (a git worktree lives one level deeper); THAWKIT_HYMENOPTERA overrides."""
    if os.environ.get("THAWKIT_HYMENOPTERA"):
        return Path(os.environ["THAWKIT_HYMENOPTERA"])
    repo = Path(__file__).resolve().parents[1]
    for parent in repo.parents:
        candidate = parent / "shared" / "data" / "hymenoptera"
        if candidate.is_dir():
            return candidate
    return None
