"""What a person looks at during a run: the layer-group summary and the TensorBoard views.

`RunViews` (a callback, `callbacks.views` in the config) adds to the scalars that the module
logs (losses, accuracy, macro F1, `lr/<group>`, `trainable_params`):

| TensorBoard tab | tag                            | when                              |
|-----------------|--------------------------------|-----------------------------------|
| Text            | `model/layer_groups`           | start: every group, params, trains|
| Images, Text    | `data/class_counts`            | start: images per class and split |
| Images          | `data/train_samples`           | first batch: augmented and mixed  |
| Images          | `val/confusion_matrix`         | validation epochs where it changed|
| Scalars         | `val/recall/<class>`           | every validation epoch            |
| Text, Scalars   | `events/unfreeze`, `unfreeze/trainable_groups` | at every unfreeze |
| HParams, Text   | `best/*`, `final/*`, `diagnosis` | end of fit                      |
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from thawkit.config.schema import ViewsSchema, check_args
from thawkit.data.counts import counts_table
from thawkit.finetune.module import FineTuneModule
from thawkit.finetune.unfreeze import UnfreezeSchedule
from thawkit.models import batchnorm
from thawkit.models.head import HEAD
from thawkit.reporting.plots import (
    ConfusionView,
    class_counts_figure,
    denormalize,
    figure_to_array,
    image_grid_figure,
    target_title,
)
from thawkit.reporting.summary import RunSummary

log = logging.getLogger(__name__)

COUNTS_TAG = "data/class_counts"


# --------------------------------------------------------------------------- layer-group summary
def layer_group_rows(module: FineTuneModule) -> list[dict[str, Any]]:
    """One row per layer group (input -> output, then the head): params, trains now, BN stats."""
    policy = module.hparams.bn_policy
    rows = []
    for group in module.backbone.groups:
        trainable = module.trainable_since[group.name] is not None
        trainable_params = sum(p.numel() for p in group.params if p.requires_grad)
        trains = (
            "yes"
            if trainable_params == group.num_params
            else "partly"
            if trainable_params
            else "no"
        )
        if group.norms:
            bn = "frozen" if batchnorm.stats_frozen(policy, trainable) else "updating"
        else:
            bn = "-"
        rows.append(
            {
                "group": group.name,
                "params": group.num_params,
                "trainable": trainable_params,
                "trains": trains,
                "bn_stats": bn,
            }
        )
    head = sum(p.numel() for p in module.head.parameters())
    head_trainable = sum(p.numel() for p in module.head.parameters() if p.requires_grad)
    rows.append(
        {
            "group": HEAD,
            "params": head,
            "trainable": head_trainable,
            "trains": "yes" if head_trainable == head else "partly" if head_trainable else "no",
            "bn_stats": "-",
        }
    )
    return rows


def layer_group_table(module: FineTuneModule, markdown: bool = False) -> str:
    """The layer-group summary as a text (or Markdown) table with a total line."""
    rows = layer_group_rows(module)
    total = sum(r["params"] for r in rows)
    trainable = sum(r["trainable"] for r in rows)
    header = ("group", "params", "trains now", "BN statistics")
    cells = [(r["group"], f"{r['params']:,}", r["trains"], r["bn_stats"]) for r in rows]
    foot = f"{trainable:,} of {total:,} parameters train ({trainable / max(total, 1):.1%})"
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines) + f"\n\n{module.hparams.backbone}: {foot}"
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:{'>' if i == 1 else '<'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*header)] + [fmt.format(*c) for c in cells]
    return (
        f"Layer groups of {module.hparams.backbone} (input -> output):\n"
        + "\n".join(lines)
        + f"\n{foot}"
    )


# --------------------------------------------------------------------------- the callback
class RunViews(L.Callback):
    """Layer-group summary at the start, and figures, events and hparams in TensorBoard.

    Args:
        samples: training images shown in the augmented (and mixed) sample grid (0 = none).
        confusion_every_n_epochs: draw the validation confusion matrix every this many epochs.
        per_class_recall: log `val/recall/<class>` scalars every validation epoch.
        max_classes_recall: skip per-class scalars above this many classes (they flood the tab).
    """

    def __init__(
        self,
        samples: int = ViewsSchema.samples,
        confusion_every_n_epochs: int = ViewsSchema.confusion_every_n_epochs,
        per_class_recall: bool = ViewsSchema.per_class_recall,
        max_classes_recall: int = ViewsSchema.max_classes_recall,
    ) -> None:
        # The ranges are the schema's (thawkit.config.schema.ViewsSchema).
        check_args(
            ViewsSchema,
            "callbacks.views",
            samples=samples,
            confusion_every_n_epochs=confusion_every_n_epochs,
            max_classes_recall=max_classes_recall,
        )
        self.samples = samples
        self.confusion_every_n_epochs = confusion_every_n_epochs
        self.per_class_recall = per_class_recall
        self.max_classes_recall = max_classes_recall
        self.logged_events = 0
        self._samples_done = False
        # The confusion figure, laid out once and redrawn for every epoch's matrix (a fifth of
        # the cost of building it anew: thawkit.reporting.plots.ConfusionView).
        self._confusion_view: ConfusionView | None = None
        self._confusion_drawn: torch.Tensor | None = None  # the matrix of the last figure drawn

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
        """The run's TensorBoardLogger, if any."""
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    @staticmethod
    def _schedule(trainer: L.Trainer) -> UnfreezeSchedule | None:
        return next((c for c in trainer.callbacks if isinstance(c, UnfreezeSchedule)), None)

    def _image(self, trainer: L.Trainer, tag: str, fig: Any, step: int) -> None:
        tb = self.tensorboard(trainer)
        if tb is not None:
            tb.experiment.add_image(tag, figure_to_array(fig), step, dataformats="HWC")

    # ------------------------------------------------------------------ start
    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        log.info("%s", layer_group_table(pl_module))
        schedule = self._schedule(trainer)
        # Events of a resumed run before the resume were logged by the run that made them.
        self.logged_events = max(self.logged_events, len(schedule.events) if schedule else 0)
        self._samples_done = self.samples == 0 or trainer.current_epoch > 0
        tb = self.tensorboard(trainer)
        if tb is None:
            return
        step = trainer.global_step
        tb.experiment.add_text(
            "model/layer_groups", layer_group_table(pl_module, markdown=True), step
        )
        tb.experiment.add_scalar("unfreeze/trainable_groups", pl_module.num_trainable_groups, step)
        counts = getattr(trainer.datamodule, "class_counts", None)
        if counts:
            self._image(trainer, COUNTS_TAG, class_counts_figure(counts), 0)
            table = counts_table(counts).replace("\n", "\n    ")  # indented: a code block
            tb.experiment.add_text(COUNTS_TAG, "    " + table, 0)

    @rank_zero_only
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: FineTuneModule, batch: Any, batch_idx: int
    ) -> None:
        # Unfreeze events happen in on_train_epoch_start hooks, all of which ran before this.
        if batch_idx == 0:
            self._log_unfreeze_events(trainer, pl_module)
        if not self._samples_done:
            self._samples_done = True
            self._log_samples(trainer, pl_module, batch)

    def _log_samples(self, trainer: L.Trainer, pl_module: FineTuneModule, batch: Any) -> None:
        # The batch as the model sees it: after augmentation and after Mixup/CutMix.
        images, targets = batch[0][: self.samples], batch[1][: self.samples]
        pre = getattr(trainer.datamodule, "preprocessing", None) or pl_module.backbone.preprocessing
        names = list(pl_module.hparams.class_names)
        titles = [target_title(t, names) for t in targets.detach().cpu()]
        mixed = targets.ndim == 2 and bool((targets.max(dim=1).values < 0.999).any())
        title = "Training samples (augmented" + (", mixed)" if mixed else ")")
        fig = image_grid_figure(denormalize(images, pre.mean, pre.std), titles, title)
        self._image(trainer, "data/train_samples", fig, trainer.global_step)

    def _log_unfreeze_events(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        schedule = self._schedule(trainer)
        if schedule is None:
            return
        tb = self.tensorboard(trainer)
        total = len(pl_module.backbone.groups)
        for event in schedule.events[self.logged_events :]:
            groups = ", ".join(event["groups"])
            text = (
                f"Epoch {event['epoch']} (step {event['step']}): unfroze {groups}; "
                f"{pl_module.num_trainable_groups} of {total} backbone groups train, "
                f"{pl_module.count_params(trainable=True):,} trainable parameters"
            )
            log.debug("%s", text)  # the schedule itself logs the event (finetune/unfreeze.py)
            if tb is not None:
                tb.experiment.add_text("events/unfreeze", text, event["step"])
                tb.experiment.add_scalar(
                    "unfreeze/trainable_groups", pl_module.num_trainable_groups, event["step"]
                )
        self.logged_events = len(schedule.events)

    # ------------------------------------------------------------------ validation
    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        confusion = pl_module.confusion.get("val")
        if trainer.sanity_checking or confusion is None or trainer.state.fn != TrainerFn.FITTING:
            return
        names = list(pl_module.hparams.class_names)
        step = trainer.global_step
        if self.per_class_recall and len(names) <= self.max_classes_recall:
            recall = confusion.diagonal().float() / confusion.sum(dim=1).clamp(min=1)
            metrics = {f"val/recall/{n}": float(r) for n, r in zip(names, recall, strict=True)}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        if trainer.current_epoch % self.confusion_every_n_epochs == 0:
            tb = self.tensorboard(trainer)
            if tb is None:
                return
            # Drawn when the matrix changed since the last one drawn: an unchanged matrix (common
            # in head-only epochs near convergence) would be the same figure again, and its
            # drawing and PNG were most of a head-only epoch's fixed cost (docs/architecture.md,
            # "Epochs on cached features"); the per-class recall stays a scalar of every epoch.
            if self._confusion_drawn is not None and torch.equal(confusion, self._confusion_drawn):
                return
            if self._confusion_view is None or self._confusion_view.class_names != names:
                self._confusion_view = ConfusionView(names)
            title = f"Validation, epoch {trainer.current_epoch}"
            image = self._confusion_view.render(confusion, title)
            tb.experiment.add_image("val/confusion_matrix", image, step, dataformats="HWC")
            self._confusion_drawn = confusion.clone()

    # ------------------------------------------------------------------ end
    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        tb = self.tensorboard(trainer)
        if tb is None:
            return
        summary = next((c for c in trainer.callbacks if isinstance(c, RunSummary)), None)
        metrics = final_metrics(trainer, summary)
        if summary is not None and summary.history:
            tb.experiment.add_text(
                "diagnosis", summary.summary(trainer, pl_module)["diagnosis"], trainer.global_step
            )
        # The HParams tab compares runs by these: all hyperparameters logged so far (the
        # composed config and the module's), with the run's best and final metrics.
        tb.log_hyperparams(dict(tb.hparams), metrics, step=trainer.global_step)
        tb.experiment.flush()


def final_metrics(trainer: L.Trainer, summary: RunSummary | None = None) -> dict[str, float]:
    """`best/<metric>` of the best epoch and `final/<metric>` of the last, for the HParams tab."""
    metrics: dict[str, float] = {}
    if summary is not None:
        best = summary.best()
        metrics.update({f"best/{k.replace('/', '_')}": float(v) for k, v in best.items()})
        if summary.history:
            last = summary.history[-1]
            for key in ("train/acc", "train/loss", "val/acc", "val/loss", "val/f1_macro"):
                if key in last:
                    metrics[f"final/{key.replace('/', '_')}"] = float(last[key])
    else:
        for key in ("val/acc", "val/loss", "val/f1_macro"):
            value = trainer.callback_metrics.get(key)
            if value is not None:
                metrics[f"final/{key.replace('/', '_')}"] = float(value)
    return metrics
