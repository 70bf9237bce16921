"""wiseft=true (run/wiseft.py, run/weight_space.py): the mixes, their endpoints, the run's model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from thawkit.inference.predict import load_checkpoint
from thawkit.run import wiseft
from thawkit.run.train import build, train
from thawkit.transfer.wiseft import WiseFTStart


def logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(batch)


def test_endpoints_predict_as_the_finetuned_and_the_start_model(make_cfg) -> None:
    datamodule, model, _ = build(make_cfg("strategy=full"))
    start = WiseFTStart()
    start.backbone_state = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    start.head_state = {k: v.clone() for k, v in model.head.state_dict().items()}
    start.probe_epochs = 1
    begin = {k: v.clone() for k, v in model.state_dict().items()}
    # "Fine-tuning": every weight and BatchNorm statistic moves.
    torch.manual_seed(0)
    finetuned = {
        k: v + 0.05 * torch.randn_like(v) if torch.is_floating_point(v) else v.clone()
        for k, v in begin.items()
    }
    finetuned = {k: v.abs() if "running_var" in k else v for k, v in finetuned.items()}
    x, _ = next(iter(datamodule.plain_loader("val")))
    model.load_state_dict(finetuned)
    expected_end = logits(model, x)
    # The start: the pretrained backbone and the head-only epoch's head trained on as a probe.
    model.load_state_dict(begin)
    head, how = wiseft.probe_head_state(model, datamodule, start, 1, 0.1, 0)
    assert how.endswith("on from the head of the 1 head-only epoch(s)")
    assert any(not torch.equal(head[k], start.head_state[k]) for k in head)
    model.head.load_state_dict(head)
    expected_start = logits(model, x)
    model.load_state_dict(begin)
    settings = OmegaConf.create({"alphas": [1.0], "probe_steps": 1, "probe_lr": 0.1,
                                 "bn_images": 8})  # fmt: skip
    state, record = wiseft.search(model, datamodule, start, finetuned, settings)
    assert record["chosen"] == 1.0 and record["bn_recalibrated_layers"] > 0
    assert torch.equal(logits(model, x), expected_end)
    settings.alphas = [0.0]
    _, record = wiseft.search(model, datamodule, start, finetuned, settings)
    assert torch.equal(logits(model, x), expected_start) and record["start"] == how
    # In between, the mix is neither (and its BatchNorm statistics were recomputed).
    settings.alphas = [0.5]
    _, record = wiseft.search(model, datamodule, start, finetuned, settings)
    assert record["curve"][0]["bn_images"] == 8
    assert not torch.allclose(logits(model, x), expected_end)


@pytest.mark.slow
def test_wiseft_run_writes_its_model_curve_and_plot(make_cfg) -> None:
    cfg = make_cfg("wiseft=true", "strategy=full", "trainer.max_epochs=1",
                   "weight_space.alphas=[0,0.5,1]", "weight_space.probe_steps=20")  # fmt: skip
    with open_dict(cfg):
        cfg.logger = None
        cfg.callbacks.views = None
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    record = summary["wiseft"]
    assert [row["a"] for row in record["curve"]] == [0.0, 0.5, 1.0]
    assert record["chosen"] in (0.0, 0.5, 1.0)
    assert record["start"].startswith("head fitted on frozen features")  # full: no probe phase
    best_val = max(row["val/acc"] for row in record["curve"])
    assert record["val/acc"] == best_val >= record["finetuned_val/acc"]
    assert summary["checkpoint"] == "checkpoints/wiseft.ckpt"
    assert (run_dir / "plots" / "wiseft.png").is_file()
    # The test split measured the chosen mix; predict/evaluate/export load it.
    chosen = next(r for r in record["curve"] if r["a"] == record["chosen"])
    assert abs(metrics["test/acc"] - chosen["test/acc"]) < 1e-6
    loaded = load_checkpoint(run_dir / "checkpoints" / "wiseft.ckpt")
    assert loaded.class_names == summary["class_names"]
