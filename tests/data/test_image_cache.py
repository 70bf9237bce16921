"""Decoded-image cache: memory budget, spill, and identical evaluation inputs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_image
from thawkit.data.datasets import ImageDataset
from thawkit.data.folder import load_rgb
from thawkit.data.image_cache import ImageCache, decode_resized
from thawkit.data.transforms import eval_resize, eval_transform, train_transform
from thawkit.models.backbone import resolve_preprocessing
from thawkit.run.train import build

PRE = resolve_preprocessing("test_efficientnet")
SIZE = 32


@pytest.fixture
def photos(tmp_path: Path) -> list[str]:
    """JPEGs and PNGs of several sizes and aspect ratios, one grayscale."""
    paths = []
    for i, (side, ext, mode) in enumerate(
        [
            (48, "jpg", "RGB"),
            (61, "png", "RGB"),
            (40, "jpg", "L"),
            (90, "png", "RGB"),
            (33, "jpg", "RGB"),
            (20, "png", "RGB"),
        ]  # fmt: skip
    ):
        paths.append(str(write_image(tmp_path / f"{i}.{ext}", i, size=side, seed=i, mode=mode)))
    return paths


def test_budget_is_respected_and_spilled_images_decode_the_same(photos: list[str]) -> None:
    side = eval_resize(SIZE, PRE.crop_pct)
    one = np.asarray(decode_resized(photos[0], side))
    budget_mb = 2.5 * one.nbytes / 2**20  # room for about two images
    cache = ImageCache(side, budget_mb)
    cache.fill(photos)
    assert 0 < len(cache) < len(photos)
    assert cache.nbytes <= cache.budget_bytes
    assert cache.nbytes == sum(a.nbytes for a in cache.images.values())
    assert cache.num_spilled == len(photos) - len(cache)
    for p in photos:  # cached or decoded on the fly: the same pixels
        assert np.array_equal(np.asarray(cache.load(p)), np.asarray(decode_resized(p, side)))


def test_zero_budget_caches_nothing(photos: list[str]) -> None:
    cache = ImageCache(36, budget_mb=0)
    cache.fill(photos)
    assert len(cache) == 0 and cache.nbytes == 0
    assert cache.load(photos[0]).size == decode_resized(photos[0], 36).size


def test_cached_pixels_are_uint8_rgb_at_the_short_side(photos: list[str]) -> None:
    cache = ImageCache(36, budget_mb=64)
    cache.fill(photos)
    for p in photos:
        pixels = cache.images[p]
        assert pixels.dtype == np.uint8 and pixels.shape[2] == 3 and min(pixels.shape[:2]) == 36
        assert cache.load(p).mode == "RGB"


def test_evaluation_inputs_are_bit_identical_to_decoding_the_file(photos: list[str]) -> None:
    tf = eval_transform(PRE, SIZE)
    cache = ImageCache(eval_resize(SIZE, PRE.crop_pct), 64, PRE.interpolation)
    cache.fill(photos)
    for p in photos:
        assert torch.equal(tf(cache.load(p)), tf(load_rgb(p)))


def test_every_augmentation_preset_runs_on_cached_images(photos: list[str]) -> None:
    cache = ImageCache(eval_resize(SIZE, PRE.crop_pct), 64, PRE.interpolation)
    cache.fill(photos)
    # `strong` rotates and shears with the backbone's bicubic interpolation.
    tf = train_transform(PRE, SIZE, name="strong", rotation=15, translate=0.1)
    ds = ImageDataset([(p, 0) for p in photos], tf, cache)
    torch.manual_seed(0)
    for _ in range(5):
        for i in range(len(ds)):
            x, _ = ds[i]
            assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
    # Augmentation never writes into the cached pixels.
    before = {p: a.copy() for p, a in cache.images.items()}
    for i in range(len(ds)):
        ds[i]
    assert all(np.array_equal(before[p], cache.images[p]) for p in before)


def test_unreadable_file_is_not_cached_and_fails_when_loaded(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    cache = ImageCache(36)
    cache.fill([str(bad)])
    assert len(cache) == 0
    with pytest.raises(Exception):  # noqa: B017  (PIL's own error type)
        cache.load(str(bad))


def test_bad_arguments_name_the_option() -> None:
    with pytest.raises(ValueError, match="image_cache_mb"):
        ImageCache(36, budget_mb=-1)
    with pytest.raises(ValueError, match="short_side"):
        ImageCache(0)


def test_fit_fills_the_cache_once_and_reports_it(make_cfg, caplog) -> None:
    cfg = make_cfg("strategy=full", "trainer.max_epochs=1")
    datamodule, model, trainer = build(cfg)
    with caplog.at_level(logging.INFO, logger="thawkit.data.image_cache"):
        trainer.fit(model, datamodule=datamodule)
    cache = datamodule.image_cache
    n = sum(len(s) for s in datamodule.splits.values())
    assert cache is not None and len(cache) == n and cache.num_spilled == 0
    assert "decoded once" in caplog.text
    trainer.test(model, datamodule=datamodule, verbose=False)
    assert datamodule.image_cache is cache  # kept, not refilled


def test_parallel_fill_equals_the_serial_path(photos: list[str], tmp_path: Path) -> None:
    """Decoding in threads keeps exactly the pixels, order and counts of decoding one by one,
    with and without the persistent cache (its entries written in threads read back the same)."""
    from thawkit.data.disk_cache import DiskCache

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    paths = [*photos, str(broken), *photos[:2]]  # a duplicate is decoded once
    side = eval_resize(SIZE, PRE.crop_pct)
    serial = ImageCache(side, workers=1)
    serial.fill(paths)
    disk = DiskCache(tmp_path / "cache")
    parallel = ImageCache(side, workers=4, disk=disk)
    parallel.fill(paths)
    read_back = ImageCache(side, workers=3, disk=DiskCache(tmp_path / "cache"))
    read_back.fill(paths)
    assert parallel.num_decoded == serial.num_decoded == len(photos)
    assert read_back.num_reused == len(photos) and read_back.num_decoded == 0
    for cache in (parallel, read_back):
        assert list(cache.images) == list(serial.images) == photos
        assert cache.nbytes == serial.nbytes
        for p in photos:
            assert np.array_equal(cache.images[p], serial.images[p])
