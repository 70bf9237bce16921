"""What a person sees of a run: TensorBoard (read back from the event files), plots/, the
layer-group summary and the fit diagnosis."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import TINY_BACKBONE, make_image_folder, tiny_cfg
from thawkit.finetune.module import FineTuneModule
from thawkit.reporting.diagnosis import VERDICTS, assess, diagnose
from thawkit.reporting.plots import (
    ConfusionView,
    confusion_figure,
    figure_to_array,
    target_title,
    write_run_plots,
)
from thawkit.reporting.tensorboard import RunViews, layer_group_rows, layer_group_table
from thawkit.run.train import train

CLASSES = ["class_0", "class_1", "class_2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, EventAccumulator]:
    """Two epochs of `gradual` (one unfreeze at epoch 1) with Mixup, three classes."""
    tmp = tmp_path_factory.mktemp("views")
    root = make_image_folder(tmp / "images", (12, 12, 10), ("train", "val"))
    cfg = tiny_cfg(tmp, ["strategy=gradual", "mix=mixup"], data_root=root)
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    events = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    events.Reload()
    return run_dir, json.loads((run_dir / "summary.json").read_text()), events


def _text(events: EventAccumulator, tag: str) -> list[tuple[int, str]]:
    return [
        (e.step, e.tensor_proto.string_val[0].decode())
        for e in events.Tensors(f"{tag}/text_summary")
    ]


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.verify()
    return Image.open(io.BytesIO(data))


# ----------------------------------------------------------------------------- TensorBoard
def test_named_group_lr_scalars_follow_the_unfreeze(run) -> None:
    _, summary, events = run
    (event,) = summary["unfreeze_events"]
    assert event["epoch"] == 1 and event["groups"] == ["stage_5"]
    scalars = events.Tags()["scalars"]
    groups = list(summary["history"][0]["lr"])
    assert groups[0] == "head" and "stem" in groups
    for group in groups:
        assert f"lr/{group}" in scalars
    assert not [t for t in scalars if t.startswith("lr/pg")]
    head = events.Scalars("lr/head")
    assert all(e.value > 0 for e in head)
    unfrozen = events.Scalars("lr/stage_5")
    assert all(e.value == 0 for e in unfrozen if e.step < event["step"])
    assert any(e.value > 0 for e in unfrozen if e.step > event["step"])
    assert all(e.value == 0 for e in events.Scalars("lr/stem"))


def test_metrics_and_trainable_params_scalars(run) -> None:
    _, summary, events = run
    scalars = events.Tags()["scalars"]
    for tag in ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/f1_macro"):
        assert tag in scalars, tag
    for name in CLASSES:
        recall = events.Scalars(f"val/recall/{name}")
        assert len(recall) == 2 and all(0 <= e.value <= 1 for e in recall)
    params = [e.value for e in events.Scalars("trainable_params")]
    assert params == [r["trainable_params"] for r in summary["history"]]
    assert params[1] > params[0]


def test_unfreeze_event(run) -> None:
    _, summary, events = run
    (event,) = summary["unfreeze_events"]
    [(step, text)] = _text(events, "events/unfreeze")
    assert step == event["step"] and "unfroze stage_5" in text and "1 of 6 backbone groups" in text
    groups = [(e.step, e.value) for e in events.Scalars("unfreeze/trainable_groups")]
    assert groups == [(0, 0.0), (event["step"], 1.0)]


def test_figures_in_tensorboard(run) -> None:
    run_dir, summary, events = run
    confusion = events.Images("val/confusion_matrix")
    # Drawn at the first validation epoch and at every later one whose matrix changed.
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    [state] = [v for k, v in ckpt["callbacks"].items() if k.startswith("RunSummary")]
    matrices = [state["confusion"][e] for e in sorted(state["confusion"])]
    changed = [i for i, m in enumerate(matrices) if i == 0 or m != matrices[i - 1]]
    epoch_steps = [e.step for e in events.Scalars(f"val/recall/{CLASSES[0]}")]  # one an epoch
    assert [e.step for e in confusion] == [epoch_steps[i] for i in changed]
    for tag, count in (("data/train_samples", 1), ("data/class_counts", 1)):
        assert len(events.Images(tag)) == count, tag
    for tag in ("val/confusion_matrix", "data/train_samples", "data/class_counts"):
        image = events.Images(tag)[0]
        assert _png(image.encoded_image_string).size == (image.width, image.height)
        assert image.width > 200 and image.height > 150


def test_model_summary_and_diagnosis_text(run) -> None:
    _, summary, events = run
    [(step, table)] = _text(events, "model/layer_groups")
    assert step == 0
    for group in ("stem", "stage_1", "stage_5", "head"):
        assert f"| {group} |" in table
    assert "| stage_5 | 45,836 | no |" in table  # frozen at the start under `gradual`
    [(_, diagnosis)] = _text(events, "diagnosis")
    assert diagnosis == summary["diagnosis"]


def test_hparams_with_final_metrics(run) -> None:
    _, summary, events = run
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metric_tags = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"best/val_acc", "best/val_loss", "final/val_acc", "final/train_acc"} <= metric_tags
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["strategy/name"].string_value == "gradual"
    assert hparams["model/backbone"].string_value == TINY_BACKBONE
    assert hparams["trainer/max_epochs"].number_value == 2
    [best] = events.Scalars("best/val_acc")
    assert best.value == pytest.approx(summary["best"]["val/acc"])


# ----------------------------------------------------------------------------- run dir
def test_plots_are_valid_pngs(run) -> None:
    run_dir, _, _ = run
    for name in ("curves", "confusion_matrix", "class_counts"):
        path = run_dir / "plots" / f"{name}.png"
        image = _png(path.read_bytes())
        assert image.width > 300 and image.height > 150, name


def test_summary_records_views(run) -> None:
    _, summary, _ = run
    assert summary["diagnosis_detail"]["verdict"] in VERDICTS
    assert summary["diagnosis"].startswith(summary["diagnosis_detail"]["verdict"])
    val = summary["confusion_matrix"]["val"]
    assert val["epoch"] == summary["best"]["epoch"]
    assert sum(map(sum, val["matrix"])) == 4 + 4 + 3  # every validation image once
    assert set(summary["history"][-1]["val/recall_per_class"]) == set(CLASSES)


def test_write_run_plots_needs_only_what_is_there(tmp_path: Path) -> None:
    history = [{"epoch": 0, "train/loss": 1.0, "val/loss": 0.9, "train/acc": 0.5, "val/acc": 0.6}]
    written = write_run_plots({"history": history}, tmp_path)
    assert set(written) == {"curves"} and _png(written["curves"].read_bytes())


# ----------------------------------------------------------------------------- summary table
def test_layer_group_table_says_what_trains() -> None:
    module = FineTuneModule(num_classes=3, backbone=TINY_BACKBONE, weights="none")
    module.set_trainable_groups(1, step=0)
    rows = layer_group_rows(module)
    assert [r["group"] for r in rows] == [g.name for g in module.backbone.groups] + ["head"]
    assert [r["trains"] for r in rows] == ["no"] * 5 + ["yes", "yes"]
    assert [r["bn_stats"] for r in rows] == ["frozen"] * 5 + ["updating", "-"]
    assert sum(r["params"] for r in rows) == module.count_params()
    table = layer_group_table(module)
    trainable = module.count_params(trainable=True)
    assert f"{trainable:,} of {module.count_params():,} parameters train" in table


def test_sample_titles_show_mixed_targets() -> None:
    assert target_title(torch.tensor(1), CLASSES) == "class_1"
    assert target_title(torch.tensor([0.7, 0.0, 0.3]), CLASSES) == "class_0 0.70 + class_2 0.30"
    assert target_title(torch.tensor([0.0, 1.0, 0.0]), CLASSES) == "class_1"


# ----------------------------------------------------------------------------- diagnosis
def _history(train_acc, val_acc, val_loss) -> list[dict]:
    return [
        {"epoch": i, "train/acc": t, "val/acc": v, "val/loss": loss}
        for i, (t, v, loss) in enumerate(zip(train_acc, val_acc, val_loss, strict=True))
    ]


def test_diagnosis_overfitting() -> None:
    history = _history(
        [0.70, 0.85, 0.95, 0.99, 1.00], [0.68, 0.76, 0.78, 0.77, 0.76], [0.8, 0.6, 0.55, 0.7, 0.9]
    )
    result = assess(history)
    assert result.verdict == "overfitting"
    assert result.numbers["gap"] == pytest.approx(0.24)
    assert result.numbers["min_val_loss_epoch"] == 2
    assert result.numbers["val_loss_rise"] == pytest.approx(0.636, abs=1e-3)
    assert "regularise" in result.remedy and "more data" in result.remedy
    assert "early stopping" in result.remedy


def test_diagnosis_underfitting_flat_and_still_improving() -> None:
    flat = assess(
        _history([0.40, 0.42, 0.41, 0.42], [0.38, 0.40, 0.39, 0.40], [1.3, 1.25, 1.26, 1.25])
    )
    assert flat.verdict == "underfitting" and "more capacity" in flat.remedy
    assert "flat" in flat.reason
    rising = assess(_history([0.30, 0.45, 0.60], [0.30, 0.44, 0.58], [1.5, 1.2, 0.9]))
    assert rising.verdict == "underfitting" and "more epochs" in rising.remedy
    assert rising.numbers["val_acc_trend"] == pytest.approx(0.28)


def test_diagnosis_good_fit() -> None:
    result = assess(_history([0.80, 0.92, 0.96], [0.82, 0.90, 0.94], [0.5, 0.3, 0.2]))
    assert result.verdict == "good fit"
    text = diagnose(_history([0.80, 0.92, 0.96], [0.82, 0.90, 0.94], [0.5, 0.3, 0.2]))
    assert text.startswith("good fit:") and "val_acc 0.94" in text and "Remedy:" in text


def test_diagnosis_stopped_too_late() -> None:
    history = _history(
        [0.80, 0.90, 0.94, 0.95, 0.96], [0.82, 0.90, 0.93, 0.92, 0.91], [0.5, 0.3, 0.25, 0.3, 0.35]
    )
    result = assess(history)
    assert result.verdict == "stopped too late"
    assert result.numbers["min_val_loss_epoch"] == 2 and result.numbers["best_epoch"] == 2
    assert "early stopping" in result.remedy and "best checkpoint" in result.remedy


def test_diagnosis_without_validation() -> None:
    assert assess([{"epoch": 0, "train/acc": 0.5}]).verdict == "no verdict"


# ----------------------------------------------------------------------------- confusion figure
def _views_at_epoch(views, logger, matrix: torch.Tensor, epoch: int) -> None:
    trainer = SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn=TrainerFn.FITTING),
        global_step=10 * (epoch + 1),
        current_epoch=epoch,
        loggers=[logger],
    )
    module = SimpleNamespace(
        confusion={"val": matrix}, hparams=SimpleNamespace(class_names=["a", "b"])
    )
    views.on_validation_end(trainer, module)


def test_confusion_figure_drawn_when_the_matrix_changed(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    views = RunViews(samples=0)
    a, b = torch.tensor([[5, 1], [2, 4]]), torch.tensor([[6, 0], [2, 4]])
    for epoch, matrix in enumerate([a, a.clone(), b, b, a]):
        _views_at_epoch(views, logger, matrix, epoch)
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), {"images": 0, "scalars": 0})
    events.Reload()
    assert [e.step for e in events.Images("val/confusion_matrix")] == [10, 30, 50]
    # The per-class recall stays a scalar of every epoch.
    assert [e.step for e in events.Scalars("val/recall/a")] == [10, 20, 30, 40, 50]


def test_confusion_view_draws_what_confusion_figure_draws() -> None:
    names = ["ants", "bees", "wasps"]
    view = ConfusionView(names)
    first = torch.tensor([[30, 3, 0], [5, 40, 1], [0, 0, 7]])
    view.render(first, "Validation, epoch 0")
    layout = confusion_figure(first, names, "Validation, epoch 0")
    layout.canvas.draw()  # laid out once by the constrained layout, as the view does
    positions = [ax.get_position() for ax in layout.axes]
    for epoch, matrix in enumerate(
        [[[33, 0, 0], [0, 41, 5], [2, 2, 3]], [[0, 0, 33], [0, 46, 0], [7, 0, 0]]]
    ):
        drawn = view.render(torch.tensor(matrix), f"Validation, epoch {epoch + 1}")
        fig = confusion_figure(matrix, names, f"Validation, epoch {epoch + 1}")
        fig.set_layout_engine("none")
        for ax, position in zip(fig.axes, positions, strict=True):
            ax.set_position(position)
        full = figure_to_array(fig)
        assert drawn.shape == full.shape
        diff = np.abs(drawn.astype(int) - full.astype(int)).max(axis=-1)
        # The same figure: only anti-aliased pixels of the frame differ, and only slightly.
        assert (diff > 0).mean() < 0.01 and diff.max() < 40
    with pytest.raises(ValueError, match="3 classes"):
        view.render(torch.zeros(2, 2), "wrong size")
