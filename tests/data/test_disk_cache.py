"""The persistent cache: a second job skips the set-up, changed files miss only their entries."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_image
from thawkit.data import disk_cache
from thawkit.data.disk_cache import DiskCache, cache_dir
from thawkit.data.feature_rows import load_rows, save_rows
from thawkit.data.image_cache import ImageCache
from thawkit.run.speed import SpeedOptions
from thawkit.run.train import build

JOB = ("strategy=feature_extraction", "augment=none", "trainer.max_epochs=1",
       "callbacks.speed.channels_last=false", "callbacks.views=null")  # fmt: skip


def _job(cfg):
    """One job of a sweep: build and fit; what its set-up ran."""
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    speed = next(c for c in trainer.callbacks if isinstance(c, SpeedOptions))
    extracted = {e["split"]: e["n"] for e in speed.features.extractions}
    return {
        "checked": datamodule.num_checked,
        "decoded": datamodule.image_cache.num_decoded,
        "extracted": extracted,
        "reused_features": speed.features.num_reused,
        "head": {k: v.clone() for k, v in model.head.state_dict().items()},
    }


def test_tests_never_use_the_users_cache(thawkit_cache: Path) -> None:
    assert cache_dir() == thawkit_cache
    assert Path("~/.cache").expanduser() not in cache_dir().parents


def test_second_job_skips_scan_decode_and_feature_extraction(make_cfg, image_folder) -> None:
    n = len(list(image_folder.rglob("*.png")))
    first = _job(make_cfg(*JOB))
    assert first["checked"] == n and first["decoded"] == n
    assert first["extracted"] == {"train": 24, "val": 8}
    second = _job(make_cfg(*JOB))  # the next job of a sweep on the same data
    assert second["checked"] == 0 and second["decoded"] == 0
    assert second["extracted"] == {} and second["reused_features"] == 24 + 8
    for name, value in first["head"].items():  # trained on the rows read back: the same head
        assert torch.allclose(value, second["head"][name], atol=1e-6), name


def test_changed_or_added_file_invalidates_exactly_its_entries(make_cfg, image_folder) -> None:
    _job(make_cfg(*JOB))
    changed = image_folder / "train" / "class_0" / "000.png"
    write_image(changed, 0, seed=999)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime on any disk
    write_image(image_folder / "train" / "class_1" / "new.png", 1, seed=1000)
    again = _job(make_cfg(*JOB))
    assert again["checked"] == 2 and again["decoded"] == 2
    assert again["extracted"] == {"train": 2}  # val unchanged: all its rows read back
    assert again["reused_features"] == 23 + 8


def test_persistent_cache_false_writes_nothing(make_cfg, thawkit_cache: Path) -> None:
    done = _job(make_cfg(*JOB, "callbacks.speed.persistent_cache=false"))
    assert done["decoded"] > 0 and done["extracted"]
    assert not any(p.is_file() for p in thawkit_cache.rglob("*"))


def _photos(folder: Path, n: int = 3) -> list[str]:
    return [str(write_image(folder / f"{i}.png", i, size=40, seed=i)) for i in range(n)]


def test_corrupt_entry_is_rebuilt_with_a_warning(tmp_path: Path, caplog) -> None:
    disk = DiskCache(tmp_path / "cache")
    photos = _photos(tmp_path / "img")
    ImageCache(32, disk=disk).fill(photos)
    entry = next(p for p in (tmp_path / "cache" / "images").rglob("*") if p.is_file())
    entry.write_bytes(entry.read_bytes()[:-7] + b"garbage")  # a torn or damaged file
    with caplog.at_level(logging.WARNING, logger="thawkit.data.disk_cache"):
        again = ImageCache(32, disk=disk)
        again.fill(photos)
    assert "is corrupt" in caplog.text and "rebuilding it" in caplog.text
    assert (again.num_decoded, again.num_reused) == (1, 2)
    third = ImageCache(32, disk=disk)
    third.fill(photos)  # rebuilt: read back like the others
    assert (third.num_decoded, third.num_reused) == (0, 3)
    for path in photos:
        assert np.array_equal(third.images[path], again.images[path])


def test_features_that_cannot_be_read_are_rebuilt_with_a_warning(tmp_path: Path, caplog) -> None:
    disk = DiskCache(tmp_path)
    save_rows(disk, "k", ["a", "b"], torch.ones(2, 3))
    assert set(load_rows(disk, "k", ["a", "b", "c"])) == {"a", "b"}
    disk.write("features", "k", b"not a tensor file")  # a whole entry, with bad contents
    with caplog.at_level(logging.WARNING, logger="thawkit.data.disk_cache"):
        assert load_rows(disk, "k", ["a"]) == {}
    assert "unreadable features" in caplog.text
    assert disk.read("features", "k") is None  # deleted: the next run writes it again


def _hammer(root: str, me: int, rounds: int, found: multiprocessing.Queue) -> None:
    """Write this process's payload and read the entry back, `rounds` times."""
    disk = DiskCache(root)
    payloads = {bytes([k]) * 1_000_000 for k in (1, 2)}
    mine = bytes([me]) * 1_000_000
    bad = 0
    for _ in range(rounds):
        disk.write("features", "shared", mine)
        got = disk.read("features", "shared")
        bad += got is not None and got not in payloads
    found.put((bad, disk.stats["features"]["corrupt"]))


def test_parallel_jobs_never_read_a_half_written_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    found = ctx.Queue()
    jobs = [ctx.Process(target=_hammer, args=(str(tmp_path), k, 25, found)) for k in (1, 2)]
    for job in jobs:
        job.start()
    results = [found.get(timeout=60) for _ in jobs]
    for job in jobs:
        job.join(timeout=60)
        assert job.exitcode == 0
    assert results == [(0, 0), (0, 0)]  # every read was one whole payload, none torn
    assert not list(tmp_path.rglob(".tmp-*"))  # no temporary file left behind


def test_trim_removes_the_least_recently_used_entries(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path, max_mb=2.5)
    for i, key in enumerate(("old", "mid", "new")):
        disk.write("images", key, b"x" * 2**20)
        path = disk._path("images", key)
        os.utime(path, (1000 + i, 1000 + i))
    disk.read("images", "old")  # used now: kept
    assert disk.trim() == 1
    assert disk.read("images", "mid") is None
    assert disk.read("images", "old") is not None and disk.read("images", "new") is not None


def test_cache_command_shows_and_clears(thawkit_cache: Path, capsys) -> None:
    DiskCache().write("scan", "k", b"{}")
    disk_cache.main(["show"])
    shown = capsys.readouterr().out
    assert str(thawkit_cache) in shown and "scan" in shown and "1 entries" in shown
    disk_cache.main(["clear"])
    assert "cleared" in capsys.readouterr().out
    assert DiskCache().entries() == []
    with pytest.raises(SystemExit):
        disk_cache.main(["wipe"])
    assert "expected show or clear" in capsys.readouterr().err
