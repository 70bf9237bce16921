"""WiSE-FT after fit (`wiseft=true`): mix the fine-tuned model with its start, keep the best mix.

For each `a` of `weight_space.alphas`, the model `(1 - a) * start + a * finetuned`
(thawkit.transfer.weight_space.interpolate) is evaluated on the validation images; `start` is
the pretrained backbone with the probe head (thawkit.transfer.wiseft). BatchNorm statistics of
a mix are not the mix of the statistics: the layers whose statistics differ between the two
models are recomputed on training images for every `a` strictly between 0 and 1 (the endpoints
are the two trained models as they are, so `a = 1` predicts exactly as the fine-tuned model).
The `a` with the best val/acc (then the lowest val/loss, then the larger `a`) is kept. The test
split, when there is one, is measured at every `a` for the record only; it never picks.
"""

from __future__ import annotations

import logging
from typing import Any

from thawkit.data.feature_cache import extract_features
from thawkit.finetune.module import FineTuneModule
from thawkit.transfer.weight_space import (
    State,
    evaluate_loader,
    interpolate,
    norms_that_differ,
    recalibrate_bn,
)
from thawkit.transfer.wiseft import WiseFTStart, fit_probe_head

log = logging.getLogger(__name__)


def probe_head_state(
    model: FineTuneModule, datamodule: Any, start: WiseFTStart, steps: int, lr: float, seed: int
) -> tuple[State, str]:
    """The probe head's state: fitted on frozen features, on from the head-only epochs' head
    if the run had any (thawkit.transfer.wiseft: why a few head-only epochs are not a probe)."""
    init = start.head_state if start.head_state is not None and start.probe_epochs > 0 else None
    current = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}
    model.backbone.load_state_dict(start.backbone_state)
    was = model.training
    model.eval()
    try:
        dataset = datamodule.plain_loader("train").dataset
        features, labels = extract_features(
            model.backbone, dataset, datamodule.batch_size, model.device
        )
    finally:
        model.backbone.load_state_dict(current)
        model.train(was)
    probe = fit_probe_head(model.head, features, labels, steps, lr, seed=seed, init=init)
    how = f"head fitted on frozen features ({steps} full-batch steps)"
    if init is not None:
        how += f", on from the head of the {start.probe_epochs} head-only epoch(s)"
    return probe.state_dict(), how


def start_state(finetuned: State, backbone: State, head: State) -> State:
    """`finetuned` with its backbone and head replaced by the start's."""
    state = dict(finetuned)
    state.update({f"backbone.{k}": v for k, v in backbone.items()})
    state.update({f"head.{k}": v for k, v in head.items()})
    return state


def search(
    model: FineTuneModule,
    datamodule: Any,
    start: WiseFTStart,
    finetuned: State,
    settings: Any,
    seed: int = 0,
) -> tuple[State, dict[str, Any]]:
    """Evaluate the grid of mixes; returns the chosen state and the record for summary.json.

    Args:
        model: the run's module (it ends holding the chosen mix).
        datamodule: the run's data module (`plain_loader` of train, val and test).
        start: the callback that kept the start.
        finetuned: the fine-tuned weights (the run's best checkpoint).
        settings: `weight_space` (alphas, probe_steps, probe_lr, bn_images).
    """
    keys = set(model.state_dict())
    finetuned = {k: v.detach().cpu() for k, v in finetuned.items() if k in keys}
    head, head_source = probe_head_state(
        model, datamodule, start, settings.probe_steps, settings.probe_lr, seed
    )
    begin = start_state(finetuned, start.backbone_state, head)
    begin = {k: v.to(finetuned[k].dtype) for k, v in begin.items()}
    norms = norms_that_differ(model, [begin, finetuned])
    train = datamodule.plain_loader("train")
    val = datamodule.plain_loader("val")
    test = datamodule.plain_loader("test") if datamodule.has_test() else None
    curve, states = [], {}
    for a in sorted({float(a) for a in settings.alphas}):
        model.load_state_dict(interpolate(begin, finetuned, a))
        images = 0
        if 0.0 < a < 1.0 and norms:
            images = recalibrate_bn(model, train, norms, settings.bn_images)
        row: dict[str, Any] = {"a": a}
        for name, loader in (("val", val), ("test", test)):
            if loader is not None:
                scores = evaluate_loader(model, loader)
                row[f"{name}/acc"], row[f"{name}/loss"] = scores["acc"], scores["loss"]
        row["bn_images"] = images
        curve.append(row)
        states[a] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        log.info("WiSE-FT a=%.2f: val/acc %.4f  val/loss %.4f", a, row["val/acc"], row["val/loss"])
    best = max(curve, key=lambda r: (r["val/acc"], -r["val/loss"], r["a"]))
    chosen = best["a"]
    model.load_state_dict(states[chosen])
    end = next((r for r in curve if r["a"] == 1.0), None)
    record = {
        "chosen": chosen,
        "curve": curve,
        "start": head_source,
        "bn_recalibrated_layers": len(norms),
        "val/acc": best["val/acc"],
        "finetuned_val/acc": end["val/acc"] if end else None,
    }
    if "test/acc" in best:
        record["test/acc"] = best["test/acc"]
        record["finetuned_test/acc"] = end.get("test/acc") if end else None
    log.info("WiSE-FT: chose a=%g (val/acc %.4f)", chosen, best["val/acc"])
    return states[chosen], record
