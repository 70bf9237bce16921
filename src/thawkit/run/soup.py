"""Model soups (Wortsman et al., 2022): `thawkit soup SWEEP_DIR` averages the runs of a sweep.

Runs fine-tuned from the same pretrained weights often lie in one basin, where the average of
their weights is as good as or better than the best of them, at the inference cost of one model.
The command reads every run under the folder (thawkit.reporting.sweep_runs.find_runs) and
its model (summary.json's `checkpoint`), and mixes those that can be mixed with the run of the
best validation accuracy: the same backbone, classes, head shape (every tensor's shape) and the
same data split. The others are named, with the reason, and skipped.

- The uniform soup: the mean of every ingredient.
- The greedy soup: ingredients sorted by their val accuracy, best first; each is added only if
  the soup's val accuracy does not drop, so it never ends below its first (best) ingredient.

For every soup tried, the BatchNorm layers whose statistics differ among its ingredients get
statistics recomputed on the training images (thawkit.transfer.weight_space). Each soup's
temperature (thawkit.finetune.calibration) is fitted anew on val: a mixture's logits are not the
mean of its ingredients', so neither is its best temperature. Both soups are measured on val
and test and written as ordinary thawkit checkpoints (`uniform.ckpt`, `greedy.ckpt`:
`thawkit predict/evaluate/export ckpt=...` load them), with `soup.json` that lists the
ingredients, the skipped runs and the scores, into a new folder (`SWEEP/soup`, or `soup-2`, ...
when taken; `--output DIR` must be new).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from thawkit.atomic import write_json_atomic
from thawkit.data import folder
from thawkit.data.datasets import ImageDataset
from thawkit.finetune.calibration import calibration_record, collect_logits, fit_temperature
from thawkit.inference.evaluate import select_samples
from thawkit.inference.outputs import output_path
from thawkit.inference.predict import LoadedModel, load_checkpoint
from thawkit.reporting.sweep_runs import SUMMARY_FILE, find_runs
from thawkit.run.weight_space import write_checkpoint
from thawkit.transfer.weight_space import (
    State,
    average,
    evaluate_loader,
    norms_that_differ,
    recalibrate_bn,
)

log = logging.getLogger(__name__)

SOUP_FILE = "soup.json"


class SoupError(ValueError):
    """The folder holds fewer than two runs that can be mixed; the message names them."""


def _ingredient(run: Path) -> tuple[dict[str, Any] | None, str]:
    """(the run's model: path, checkpoint, val/acc), or (None, why it cannot be used)."""
    path = run / SUMMARY_FILE
    if not path.is_file():
        return None, "no summary.json (the run did not finish)"
    summary = json.loads(path.read_text())
    if summary.get("status", "completed") != "completed":
        return None, f"status {summary.get('status')}"
    if not summary.get("checkpoint"):
        return None, "summary.json names no checkpoint"
    ckpt = run / summary["checkpoint"]
    if not ckpt.is_file():
        return None, f"its checkpoint {ckpt} is missing"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    return {
        "run": run,
        "checkpoint": ckpt,
        "state": raw["state_dict"],
        "hparams": raw.get("hyper_parameters", {}),
        "meta": raw.get("thawkit", {}),
        "recorded_val": (summary.get("best") or {}).get("val/acc"),
    }, ""


def mismatch(reference: dict[str, Any], other: dict[str, Any]) -> str:
    """Why `other` cannot be mixed with `reference` ('' when it can)."""
    ref_hp, hp = reference["hparams"], other["hparams"]
    if hp.get("backbone") != ref_hp.get("backbone"):
        return f"backbone {hp.get('backbone')}, not {ref_hp.get('backbone')}"
    if list(hp.get("class_names") or []) != list(ref_hp.get("class_names") or []):
        return f"classes {list(hp.get('class_names') or [])[:6]}, not the reference's"
    ref, state = reference["state"], other["state"]
    head = sorted(k for k in set(ref) | set(state) if k.startswith("head."))
    if any(k not in ref or k not in state or ref[k].shape != state[k].shape for k in head):
        return "another head shape (model.head)"
    if set(ref) != set(state) or any(ref[k].shape != state[k].shape for k in ref):
        return "other tensors than the reference's"
    if other["meta"].get("image_size") != reference["meta"].get("image_size"):
        return f"image size {other['meta'].get('image_size')}, not the reference's"
    if not same_split(reference["meta"].get("data") or {}, other["meta"].get("data") or {}):
        return "another data split (data.root, or the fractions and seed of a flat folder)"
    return ""


def _splits(data: dict[str, Any]) -> Any:
    """The (class names, split -> files) a run's recorded data settings give."""
    names, splits = folder.discover(
        data["root"], data.get("val_fraction") or 0.15, data.get("test_fraction") or 0.0,
        data.get("seed") or 0, min_classes=1,
    )  # fmt: skip
    return names, {k: sorted(str(p) for p, _ in v) for k, v in splits.items()}


def same_split(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two runs' data settings give the same splits: the seed matters only where the
    split is drawn (a flat folder), not with train/val/test folders."""
    if a == b:
        return True
    if not a.get("root") or a.get("root") != b.get("root"):
        return False
    return _splits(a) == _splits(b)


def _loader(model: LoadedModel, split: str, batch_size: int) -> DataLoader | None:
    try:
        _, _, samples = select_samples(model, None, split)
    except Exception:  # noqa: BLE001 - a split the folder does not have
        return None
    return DataLoader(ImageDataset(samples, model.transform), batch_size=batch_size)


class Kitchen:
    """Mixes states on one module and measures them (val, test) after BatchNorm recalibration."""

    def __init__(self, model: LoadedModel, batch_size: int, bn_images: int) -> None:
        self.module = model.module
        self.train = _loader(model, "train", batch_size)
        self.val = _loader(model, "val", batch_size)
        self.test = _loader(model, "test", batch_size)
        self.bn_images = bn_images
        if self.val is None or self.train is None:
            raise SoupError(f"{model.path}: its image folder has no train and val split to mix on")

    def taste(
        self, states: Sequence[State], test: bool = False, calibrate: bool = False
    ) -> tuple[State, dict[str, Any]]:
        """The mix of `states` and its scores; with `calibrate`, its temperature fitted on the
        same val logits (stored in the state, the record under "calibration")."""
        keys = set(self.module.state_dict())  # a DANN run's domain classifier is not mixed
        states = [{k: v for k, v in s.items() if k in keys} for s in states]
        self.module.load_state_dict(average(states))
        norms = norms_that_differ(self.module, states) if len(states) > 1 else []
        if norms:
            recalibrate_bn(self.module, self.train, norms, self.bn_images)
        scores: dict[str, Any] = {}
        if calibrate:
            device = next(self.module.parameters()).device
            logits, labels = collect_logits(self.module, self.val, device)
            temperature = fit_temperature(logits, labels)
            self.module.temperature.fill_(temperature)
            scores["val/acc"] = int((logits.argmax(1) == labels).sum()) / len(labels)
            scores["calibration"] = calibration_record(logits, labels, temperature)
        else:
            scores["val/acc"] = evaluate_loader(self.module, self.val)["acc"]
        if test and self.test is not None:
            scores["test/acc"] = evaluate_loader(self.module, self.test)["acc"]
        state = {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        return state, scores


def soup(
    sweep: str | Path,
    output: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 32,
    bn_images: int = 1024,
) -> dict[str, Any]:
    """The uniform and the greedy soup of the runs under `sweep`; returns soup.json's record."""
    sweep = Path(sweep)
    found, skipped = [], []
    for run in find_runs(sweep):
        item, why = _ingredient(run)
        if item is None:
            skipped.append({"run": str(run), "reason": why})
        else:
            found.append(item)
    if not found:
        raise SoupError(f"{sweep} holds no finished run with a checkpoint")
    reference = max(found, key=lambda i: i["recorded_val"] or 0.0)
    ingredients = []
    for item in found:
        why = mismatch(reference, item)
        if why:
            skipped.append({"run": str(item["run"]), "reason": why})
            log.warning("Soup: skipping %s: %s", item["run"], why)
        else:
            ingredients.append(item)
    if len(ingredients) < 2:
        names = ", ".join(f"{s['run']} ({s['reason']})" for s in skipped) or "none"
        raise SoupError(
            f"{sweep}: {len(ingredients)} run(s) can be mixed, a soup needs 2. Skipped: {names}"
        )
    kitchen = Kitchen(load_checkpoint(reference["checkpoint"], device), batch_size, bn_images)
    for item in ingredients:
        _, item["scores"] = kitchen.taste([item["state"]], test=True)
    ingredients.sort(key=lambda i: -i["scores"]["val/acc"])  # stable: sweep order among ties
    uniform_state, uniform = kitchen.taste([i["state"] for i in ingredients], True, True)
    chosen, steps = [ingredients[0]], []
    best = ingredients[0]["scores"]["val/acc"]
    for item in ingredients[1:]:
        _, scores = kitchen.taste([i["state"] for i in [*chosen, item]])
        kept = scores["val/acc"] >= best
        steps.append({"run": str(item["run"]), "val/acc": scores["val/acc"], "added": kept})
        if kept:
            chosen.append(item)
            best = scores["val/acc"]
    greedy_state, greedy = kitchen.taste([i["state"] for i in chosen], True, True)
    out = output_path(output, sweep / "soup", "--output", overwrite=False, folder=True)
    template = reference["checkpoint"]
    write_checkpoint(template, uniform_state, out / "uniform.ckpt")
    write_checkpoint(template, greedy_state, out / "greedy.ckpt")
    record = {
        "sweep": str(sweep),
        "ingredients": [
            {"run": str(i["run"]), "checkpoint": str(i["checkpoint"]), **i["scores"]}
            for i in ingredients
        ],
        "skipped": skipped,
        "best_single": {"run": str(ingredients[0]["run"]), **ingredients[0]["scores"]},
        "uniform": {"checkpoint": "uniform.ckpt", "size": len(ingredients), **uniform},
        "greedy": {
            "checkpoint": "greedy.ckpt",
            "ingredients": [str(i["run"]) for i in chosen],
            "steps": steps,
            **greedy,
        },
        "bn_images": bn_images,
    }
    write_json_atomic(out / SOUP_FILE, record)
    record["output_dir"] = str(out)
    return record


def _row(name: str, scores: dict[str, Any]) -> str:
    test = scores.get("test/acc")
    return f"  {name:<12} val/acc {scores['val/acc']:.4f}" + (
        f"  test/acc {test:.4f}" if test is not None else ""
    )


def main(argv: Sequence[str] | None = None) -> None:
    """`thawkit soup SWEEP_DIR`: the uniform and greedy soups of a sweep's runs."""
    parser = argparse.ArgumentParser(prog="thawkit soup", description=main.__doc__)
    parser.add_argument("sweep", help="a multirun dir (or any folder of run dirs)")
    parser.add_argument("--output", default=None, help="a new folder (default: SWEEP/soup)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bn-images", type=int, default=1024, help="for BatchNorm statistics")
    args = parser.parse_args(argv)
    try:
        record = soup(args.sweep, args.output, args.device, args.batch_size, args.bn_images)
    except (SoupError, FileNotFoundError, FileExistsError) as e:
        parser.error(str(e))
    for s in record["skipped"]:
        print(f"skipped {s['run']}: {s['reason']}")
    print(_row("best single", record["best_single"]))
    print(_row(f"uniform ({record['uniform']['size']})", record["uniform"]))
    print(_row(f"greedy ({len(record['greedy']['ingredients'])})", record["greedy"]))
    print(f"wrote {record['output_dir']}")
