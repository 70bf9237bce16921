"""FineTuneModule: a pretrained backbone, a new head, and the frozen-state that strategies drive.

Frozen-ness lives here (`trainable_since`), not in a callback: it is saved in every checkpoint
and restored before the optimizer is built, so a resumed run trains exactly the groups it
trained before. The optimizer holds every group from step 0 (docs/architecture.md); a frozen
group has `requires_grad=False` and, through the scheduler's gate, an LR of exactly 0.
Applying the frozen state is `thawkit.finetune.frozen`; the parameter groups are
`thawkit.finetune.param_groups`; the metrics are `thawkit.finetune.metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from thawkit.compat import logs_this_step
from thawkit.config.schema import ModelSchema, check_args
from thawkit.data.targets import DomainBatch
from thawkit.finetune.checkpoint_meta import CHECKPOINT_KEY, data_meta, drop_prefixed
from thawkit.finetune.frozen import FrozenNormsWarningFilter, apply_frozen_state, unfreeze_top
from thawkit.finetune.loss_guard import check_loss
from thawkit.finetune.lr_schedule import FineTuneLR
from thawkit.finetune.metrics import confusion_matrices, finish_confusion, stage_metrics
from thawkit.finetune.param_groups import layer_group_lrs, layered_param_groups
from thawkit.models import batchnorm
from thawkit.models.backbone import Backbone, LayerGroup, build_backbone
from thawkit.models.head import HEAD, Head
from thawkit.models.loss import soft_target_cross_entropy
from thawkit.transfer.domain import (
    DomainAdaptation,
    domain_training_step,
    target_validation_step,
)

log = logging.getLogger(__name__)


class FineTuneModule(L.LightningModule):
    """Backbone + head with discriminative LRs, a BatchNorm policy and explicit frozen state.

    Args:
        num_classes: number of classes (from the data).
        backbone: timm or torchvision model name.
        weights: weight source for the backbone (see `thawkit.models.weights`).
        head: keyword arguments of `thawkit.models.head.Head` (kind, hidden, dropout, batchnorm).
        optimizer: a partial optimizer (Hydra `_partial_: true`), given the param groups.
        scheduler: a partial `FineTuneLR` (Hydra `_partial_: true`), or None for constant LR.
        lr: the head's learning rate.
        lr_decay: LR multiplier per layer group going down from the head (1.0 = same LR).
        weight_decay: decoupled weight decay; never applied to norm or bias parameters.
        label_smoothing: label smoothing of the loss.
        bn_policy: `frozen_groups`, `all` or `none` (whose BatchNorm statistics stay fixed).
        bn_freeze_affine: also freeze BatchNorm weight/bias where statistics are frozen.
        class_names: names of the classes, saved with the checkpoint for prediction.
        class_weights: per-class loss weights, or None.
        domain_adaptation: the `da` config (`thawkit.transfer.domain.DomainAdaptation`): with
            a method, training batches carry target images and the step adds the domain loss.
            Not saved in the hyperparameters: a checkpoint loaded for prediction has none.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = ModelSchema.backbone,
        weights: str = ModelSchema.weights,
        head: dict | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., FineTuneLR] | None = None,
        lr: float = ModelSchema.lr,
        lr_decay: float = ModelSchema.lr_decay,
        weight_decay: float = ModelSchema.weight_decay,
        label_smoothing: float = ModelSchema.label_smoothing,
        bn_policy: str = ModelSchema.bn_policy,
        bn_freeze_affine: bool = ModelSchema.bn_freeze_affine,
        class_names: Sequence[str] | None = None,
        class_weights: Sequence[float] | None = None,
        domain_adaptation: DomainAdaptation | None = None,
    ) -> None:
        super().__init__()
        # The ranges and names are the schema's (thawkit.config.schema.ModelSchema).
        check_args(ModelSchema, "model", lr=lr, lr_decay=lr_decay, weight_decay=weight_decay)
        check_args(ModelSchema, "model", label_smoothing=label_smoothing, bn_policy=bn_policy)
        class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        # Plain containers only: the checkpoint must load with torch.load(weights_only=True).
        head = OmegaConf.to_container(head) if isinstance(head, DictConfig) else dict(head or {})
        self.save_hyperparameters(
            ignore=["optimizer", "scheduler", "class_weights", "domain_adaptation"]
        )
        self.backbone: Backbone = build_backbone(backbone, weights)
        self.head = Head(self.backbone.num_features, num_classes, **(head or {}))
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.scheduler_factory = scheduler
        weights_t = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights_t, persistent=False)
        # Temperature scaling (thawkit.finetune.calibration): fitted after fit, saved in the
        # checkpoint; inference divides the logits by it. 1.0 = uncalibrated.
        self.register_buffer("temperature", torch.ones(()))
        # Global step at which each layer group became trainable; None = frozen. Head trains.
        self.trainable_since: dict[str, int | None] = {g.name: None for g in self.backbone.groups}
        self.trainable_since[HEAD] = 0
        self.lr_scale = 1.0
        self._step_lrs: dict[str, float] = {}  # a step's LRs not logged yet (on_train_batch_start)
        self._metrics_logged: set[str] = set()  # stages whose metrics this epoch logged (_step)
        self._eval_mode_filter = FrozenNormsWarningFilter()
        self.train_metrics = stage_metrics(num_classes, "train/")
        self.val_metrics = stage_metrics(num_classes, "val/")
        self.test_metrics = stage_metrics(num_classes, "test/")
        # Confusion matrices (rows: true class) of the last finished val/test epoch (reports).
        self.confusion_metrics = confusion_matrices(num_classes)
        self.confusion: dict[str, torch.Tensor] = {}
        # A weight regularizer (thawkit.transfer.regularize) attaches itself here for a fit; its
        # penalty is added to the training loss and logged as train/penalty.
        self.regularizer: Any = None
        # Knowledge distillation (thawkit.transfer.distill) attaches itself here for a fit.
        self.distiller: Any = None
        # Domain adaptation (thawkit.transfer.domain): the loss on source and target features
        # (a DANN domain classifier trains with the head), accuracy on a labelled target folder.
        da = domain_adaptation
        self.domain_loss = da.build_loss(self.backbone.num_features) if da is not None else None
        self.target_metrics = stage_metrics(num_classes, "target/")
        self._apply_frozen_state()

    # ----------------------------------------------------------------- frozen state
    @property
    def groups_top_down(self) -> list[LayerGroup]:
        """Backbone layer groups from the output (depth 1) down to the stem."""
        return list(reversed(self.backbone.groups))

    @property
    def num_trainable_groups(self) -> int:
        return sum(self.trainable_since[g.name] is not None for g in self.backbone.groups)

    def set_trainable_groups(
        self, n: int, step: int | None = None, lr_scale: float | None = None
    ) -> list[str]:
        """Make the top `n` backbone groups trainable (never re-freezes).

        Args:
            n: backbone groups (from the top) that train from now on; -1 = all.
            step: the global step they start at (default: the current one).
            lr_scale: if any group was unfrozen, the LR multiplier from now on (two_phase).

        Returns:
            The names of the newly unfrozen groups.
        """
        step = self.global_step if step is None else step
        names = [g.name for g in self.groups_top_down]
        newly = unfreeze_top(self.trainable_since, names, n, step)
        if newly:
            if lr_scale is not None:
                self.lr_scale = lr_scale
            self._apply_frozen_state()
            self.refresh_lrs()
        return newly

    def _group_states(self) -> list[tuple[LayerGroup, bool]]:
        return [(g, self.trainable_since[g.name] is not None) for g in self.backbone.groups]

    def _apply_frozen_state(self) -> None:
        hp = self.hparams
        apply_frozen_state(self._group_states(), hp.bn_policy, hp.bn_freeze_affine, self.training)

    def train(self, mode: bool = True) -> FineTuneModule:
        # Lightning flips train/eval around validation; the BatchNorm policy is re-applied here.
        super().train(mode)
        batchnorm.apply_modes(self._group_states(), self.hparams.bn_policy, mode)
        return self

    def lr_gate(self, layer_group: str) -> tuple[int | None, float]:
        """For the scheduler: when `layer_group` became trainable, and the current LR scale."""
        return self.trainable_since[layer_group], self.lr_scale

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        checkpoint[CHECKPOINT_KEY] = {
            "trainable_since": dict(self.trainable_since),
            "lr_scale": self.lr_scale,
            "preprocessing": self.backbone.preprocessing.to_dict(),
            **data_meta(datamodule),  # what predict/evaluate need to rebuild the inputs
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.domain_loss is None:  # loaded for prediction: the domain classifier is not used
            drop_prefixed(checkpoint.get("state_dict", {}), "domain_loss.")
        # Checkpoints from before temperature scaling load as uncalibrated.
        checkpoint.get("state_dict", {}).setdefault("temperature", torch.ones(()))
        # Runs before the optimizer is rebuilt: the resumed run trains exactly what it trained.
        state = checkpoint.get(CHECKPOINT_KEY)
        if state:
            self.trainable_since.update(state["trainable_since"])
            self.lr_scale = state["lr_scale"]
            self._apply_frozen_state()

    def refresh_lrs(self) -> None:
        """Apply the scheduler's LRs for the current step now (after an unfreeze or a resume)."""
        if self._trainer is None:
            return
        for config in self.trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, FineTuneLR):
                config.scheduler.refresh()

    def on_fit_start(self) -> None:
        # Norms the BatchNorm policy froze are in eval mode on purpose: Lightning need not warn.
        self._eval_mode_filter.install(self, self._group_states(), self.hparams.bn_policy)

    def on_train_start(self) -> None:
        self._eval_mode_filter.remove()
        # A resumed run may have another length (the schedule's shape) than the saved one.
        self.refresh_lrs()

    def teardown(self, stage: str) -> None:
        self._eval_mode_filter.remove()

    # ----------------------------------------------------------------- forward and steps
    @property
    def backbone_frozen(self) -> bool:
        return self.num_trainable_groups == 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # A fully frozen backbone stores no activations for backward.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone_frozen):
            return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of images, or of pooled features (B x num_features, 2-D).

        Pooled features come from `thawkit.data.feature_cache` in head-only epochs; they are only
        valid while the backbone is frozen (with frozen BatchNorm statistics).
        """
        if x.ndim == 2:
            if not self.backbone_frozen:
                raise RuntimeError(
                    "Got pooled features while backbone groups train: cached features are valid "
                    "only for a frozen backbone. Pass images (B x C x H x W) instead."
                )
            return self.head(x)
        return self.head(self.forward_features(x))

    def calibrated_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits divided by the fitted temperature: their softmax is the calibrated probability."""
        return self(x) / self.temperature

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_target_cross_entropy(
            logits, targets, self.class_weights, self.hparams.label_smoothing
        )

    def _step(
        self,
        batch: tuple[torch.Tensor, torch.Tensor],
        stage: str,
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x, y = batch
        logits = self(x) if logits is None else logits
        if stage == "test":  # best.ckpt's temperature: the calibrated NLL, as evaluate's
            logits = logits / self.temperature
        loss = self.loss(logits, y)
        if stage == "train" and self.distiller is not None:
            loss = self.distiller.loss(self, x, logits, loss)
        hard = y.argmax(-1) if y.ndim == 2 else y
        metrics = {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}
        metrics[stage].update(logits.detach(), hard)
        if stage in self.confusion_metrics:
            self.confusion_metrics[stage].update(logits.detach(), hard)
        on_step = stage == "train"
        # sync_dist: under DDP every rank must see the same val/loss, or early stopping, the
        # plateau scheduler and plateau unfreezing decide differently per rank (torchmetrics
        # objects below synchronise themselves). A no-op on one device.
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True,
            batch_size=len(x), sync_dist=True, add_dataloader_idx=False,
        )  # fmt: skip
        if stage not in self._metrics_logged:
            # Lightning computes a logged torchmetrics object at the epoch's end from the
            # object's own state, which `update` above fills every step: handing it over once
            # an epoch logs the same values as every step, without Lightning's per-call
            # bookkeeping (~1 ms a step: docs/architecture.md, "Epochs on cached features").
            self._metrics_logged.add(stage)
            self.log_dict(
                metrics[stage], on_step=False, on_epoch=True, prog_bar=stage != "train",
                add_dataloader_idx=False,
            )  # fmt: skip
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.domain_loss is not None and isinstance(batch, DomainBatch):
            loss = domain_training_step(self, batch)
        else:
            loss = self._step(batch, "train")
        if self.regularizer is not None:
            penalty = self.regularizer.penalty(self)
            n = len(batch[0])
            self.log("train/penalty", penalty, on_step=True, on_epoch=True, batch_size=n)
            loss = loss + penalty
        check_loss(self, loss, batch_idx)  # a NaN loss stops the run before backward
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 1:  # the labelled target folder (da.target_val_root)
            target_validation_step(self, batch)
            return
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Step values reach the loggers only every trainer.log_every_n_steps steps: the LRs the
        # step trains with are logged at those steps alone (thawkit.compat.logs_this_step),
        # which writes the same lr/<group> scalars as logging them every step, at a fraction of
        # the cost (docs/architecture.md, "Epochs on cached features").
        self._step_lrs = self.group_lrs(prefix="lr/")
        if logs_this_step(self.trainer):
            self.log_dict(self._step_lrs, on_step=True, on_epoch=False)
            self._step_lrs = {}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A callback that stops the run during a step (max_time) makes Lightning log that step
        # too: its LRs, read before the scheduler stepped, join it.
        if self._step_lrs and logs_this_step(self.trainer):
            self.log_dict(self._step_lrs, on_step=True, on_epoch=False)
        self._step_lrs = {}

    def on_validation_epoch_start(self) -> None:
        self._metrics_logged.discard("val")

    def on_test_epoch_start(self) -> None:
        self._metrics_logged.discard("test")

    def on_train_epoch_start(self) -> None:
        self._metrics_logged.discard("train")
        n = float(self.count_params(trainable=True))
        self.log("trainable_params", n, on_step=False, on_epoch=True, sync_dist=True)

    def _store_confusion(self, stage: str) -> None:
        matrix = finish_confusion(self.confusion_metrics[stage])
        if matrix is not None:
            self.confusion[stage] = matrix

    def on_test_epoch_end(self) -> None:
        self._store_confusion("test")

    def on_validation_epoch_end(self) -> None:
        self._store_confusion("val")
        if self.trainer.sanity_checking or self.trainer.lr_scheduler_configs == []:
            return
        loss = self.trainer.callback_metrics.get("val/loss")
        if loss is not None:
            self.trainer.lr_scheduler_configs[0].scheduler.observe(float(loss))

    # ----------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict[str, Any]]:
        """One (decay, no-decay) pair per layer group, LR = lr * lr_decay**depth from the head."""
        hp = self.hparams
        layered: list[tuple[str, list[nn.Parameter]]] = [(HEAD, list(self.head.parameters()))]
        layered += [(g.name, g.params) for g in self.groups_top_down]
        if self.domain_loss is not None:  # a DANN domain classifier trains with the head
            layered[0][1].extend(self.domain_loss.parameters())
        return layered_param_groups(layered, hp.lr, hp.lr_decay, hp.weight_decay)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.param_groups())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        total = self.trainer.estimated_stepping_batches
        spe = max(1, int(total // max(1, self.trainer.max_epochs or 1)))
        scheduler = self.scheduler_factory(
            optimizer, total_steps=total, steps_per_epoch=spe, gate=self.lr_gate
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def group_lrs(self, prefix: str = "") -> dict[str, float]:
        """Current LR of every named layer group (head first)."""
        if self._trainer is None or not self.trainer.optimizers:
            return {}
        return layer_group_lrs(self.trainer.optimizers[0], prefix)

    def count_params(self, trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)
