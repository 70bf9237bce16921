"""thawkit soup (run/soup.py): uniform and greedy soups of a sweep's runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from conftest import make_image_folder, tiny_cfg
from thawkit.cli import main as cli
from thawkit.inference.predict import load_checkpoint
from thawkit.run.soup import SoupError, same_split, soup
from thawkit.run.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run (1 epoch)."""
    tmp = tmp_path_factory.mktemp("soup")
    images = make_image_folder(tmp / "images", (12, 12), ("train", "val", "test"))
    cfg = tiny_cfg(tmp, ["trainer.max_epochs=1"], data_root=images)
    with open_dict(cfg):
        cfg.logger = None
        cfg.callbacks.views = None
    train(cfg)
    return Path(cfg.paths.output_dir)


def copy_run(run: Path, to: Path, change=None) -> Path:
    """A copy of `run` whose checkpoint `change(ckpt)` edits."""
    shutil.copytree(run, to)
    summary = json.loads((to / "summary.json").read_text())
    path = to / summary["checkpoint"]
    if change is not None:
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        torch.save(ckpt, path)
    return to


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_soup_of_two_copies_is_the_checkpoint(trained: Path, tmp_path: Path) -> None:
    copy_run(trained, tmp_path / "sweep" / "0")
    copy_run(trained, tmp_path / "sweep" / "1")
    record = soup(tmp_path / "sweep", device="cpu")
    original = state(trained / "checkpoints" / "best.ckpt")
    out = Path(record["output_dir"])
    assert out == tmp_path / "sweep" / "soup"
    for name in ("uniform.ckpt", "greedy.ckpt"):
        mixed = state(out / name)
        assert mixed.keys() == original.keys()
        weights = [k for k in original if k != "temperature"]  # refitted on val: see below
        assert all(torch.equal(mixed[k], original[k]) for k in weights), name
        assert float(mixed["temperature"]) == pytest.approx(float(original["temperature"]), 1e-4)
    assert record["uniform"]["val/acc"] == record["best_single"]["val/acc"]
    assert load_checkpoint(out / "greedy.ckpt").class_names  # an ordinary checkpoint
    # A second soup never overwrites the first.
    assert Path(soup(tmp_path / "sweep", device="cpu")["output_dir"]).name == "soup-2"


def test_a_soup_fits_its_own_temperature(trained: Path, tmp_path: Path) -> None:
    """Ingredients with temperatures 0.5 and 4 (same weights): the soup's temperature is fitted
    on val again, as the run's own was, not their mean (2.25)."""

    def with_temperature(t: float):
        return lambda ckpt: ckpt["state_dict"].update(temperature=torch.tensor(t))

    copy_run(trained, tmp_path / "sweep" / "0", with_temperature(0.5))
    copy_run(trained, tmp_path / "sweep" / "1", with_temperature(4.0))
    record = soup(tmp_path / "sweep", device="cpu")
    fitted = float(state(trained / "checkpoints" / "best.ckpt")["temperature"])
    for name in ("uniform", "greedy"):
        calibration = record[name]["calibration"]
        assert calibration["temperature"] == pytest.approx(fitted, rel=1e-4)
        assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9
        ckpt = Path(record["output_dir"]) / record[name]["checkpoint"]
        assert float(state(ckpt)["temperature"]) == pytest.approx(fitted, rel=1e-4)


def test_greedy_soup_and_mismatched_runs(trained: Path, tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"

    def noisy(seed: float):
        def change(ckpt):
            g = torch.Generator().manual_seed(int(seed))
            for k, v in ckpt["state_dict"].items():
                if torch.is_floating_point(v) and "running" not in k:
                    v.add_(seed * torch.randn(v.shape, generator=g))

        return change

    copy_run(trained, sweep / "0")
    copy_run(trained, sweep / "1", noisy(3.0))  # far away: it would spoil a soup
    copy_run(trained, sweep / "2", noisy(0.01))
    other_backbone = copy_run(
        trained, sweep / "3", lambda c: c["hyper_parameters"].update(backbone="resnet18")
    )
    other_classes = copy_run(
        trained, sweep / "4", lambda c: c["hyper_parameters"].update(class_names=["x", "y"])
    )
    cli(["soup", str(sweep), "--device", "cpu"])
    printed = capsys.readouterr().out
    record = json.loads((sweep / "soup" / "soup.json").read_text())
    skipped = {s["run"]: s["reason"] for s in record["skipped"]}
    assert "backbone resnet18" in skipped[str(other_backbone)]
    assert "classes" in skipped[str(other_classes)]
    assert f"skipped {other_backbone}" in printed
    assert record["uniform"]["size"] == 3
    first = record["ingredients"][0]["val/acc"]
    assert record["greedy"]["val/acc"] >= first
    assert all(s["added"] == (s["run"] in record["greedy"]["ingredients"])
               for s in record["greedy"]["steps"])  # fmt: skip


def test_nothing_to_mix_is_an_error(trained: Path, tmp_path: Path) -> None:
    copy_run(trained, tmp_path / "sweep" / "0")
    with pytest.raises(SoupError, match="a soup needs 2"):
        soup(tmp_path / "sweep", device="cpu")


def test_the_seed_changes_the_split_of_a_flat_folder_only(tmp_path: Path) -> None:
    layout = make_image_folder(tmp_path / "layout", (6, 6), ("train", "val"))
    flat = make_image_folder(tmp_path / "flat", (10, 10), ())
    data = {"val_fraction": 0.3, "test_fraction": 0.0}
    assert same_split({**data, "root": str(layout), "seed": 0}, {**data, "root": str(layout),
                      "seed": 1})  # fmt: skip
    assert not same_split({**data, "root": str(flat), "seed": 0}, {**data, "root": str(flat),
                          "seed": 1})  # fmt: skip
