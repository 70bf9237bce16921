"""One callback drives every strategy's schedule of which layer groups train when.

A strategy is only a set of parameters of `UnfreezeSchedule`:

| strategy           | initial_groups | every_n_epochs | groups_per_step | on_plateau |
|--------------------|----------------|----------------|-----------------|------------|
| feature_extraction | 0              | -              | -               | no         |
| partial            | k              | -              | -               | no         |
| gradual            | 0              | N              | 1               | no         |
| gradual on plateau | 0              | (ignored)      | 1               | yes        |
| full / scratch     | -1 (all)       | -              | -               | no         |
| two_phase          | 0              | E (once)       | -1 (all)        | no         |
| lp_ft              | 0              | (ignored)      | -1 (all, once)  | yes        |

The callback only decides; the module holds the frozen state (and checkpoints it).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

from thawkit.config.schema import UnfreezeSchema, check_args
from thawkit.finetune.module import FineTuneModule

log = logging.getLogger(__name__)


def probe_epochs(max_epochs: int) -> int:
    """The most epochs a plateau schedule's first phase (LP-FT's probe) may wait within a budget
    of `max_epochs`, so that fine-tuning gets at least half of it."""
    return max(1, (max_epochs - 1) // 2)


class UnfreezeSchedule(L.Callback):
    """Unfreeze backbone layer groups from the top down, on epochs or on validation plateaus.

    Args:
        name: the strategy's name (recorded in logs and summaries).
        initial_groups: backbone groups (from the top) that train from the start; -1 = all.
        every_n_epochs: unfreeze `groups_per_step` more groups every this many epochs.
        groups_per_step: groups unfrozen at each event; -1 = all remaining.
        max_groups: never train more than this many backbone groups (None = no cap).
        max_events: stop after this many unfreeze events (two_phase: 1).
        on_plateau: unfreeze when `monitor` has not improved for `patience` validations,
            instead of on the fixed epochs of `every_n_epochs` (then ignored). The event takes
            effect at the next epoch start.
        monitor: validation metric watched for plateaus (lower is better).
        patience: validations without improvement (by more than 1e-4) that make a plateau.
        lr_scale_after_unfreeze: multiply every group's LR by this after the first event.
        plateau_max_epochs: with `on_plateau`, also unfreeze when this many epochs have passed
            since the previous event (or the start) without a plateau (lp_ft: the probe's
            epoch budget); None = wait for the plateau.
    """

    def __init__(
        self,
        name: str = UnfreezeSchema.name,
        initial_groups: int = UnfreezeSchema.initial_groups,
        every_n_epochs: int | None = UnfreezeSchema.every_n_epochs,
        groups_per_step: int = UnfreezeSchema.groups_per_step,
        max_groups: int | None = UnfreezeSchema.max_groups,
        max_events: int | None = UnfreezeSchema.max_events,
        on_plateau: bool = UnfreezeSchema.on_plateau,
        monitor: str = UnfreezeSchema.monitor,
        patience: int = UnfreezeSchema.patience,
        lr_scale_after_unfreeze: float = UnfreezeSchema.lr_scale_after_unfreeze,
        plateau_max_epochs: int | None = UnfreezeSchema.plateau_max_epochs,
    ) -> None:
        # The ranges are the schema's (thawkit.config.schema.UnfreezeSchema).
        check_args(
            UnfreezeSchema,
            "strategy",
            initial_groups=initial_groups,
            every_n_epochs=every_n_epochs,
            groups_per_step=groups_per_step,
            max_groups=max_groups,
            max_events=max_events,
            patience=patience,
            lr_scale_after_unfreeze=lr_scale_after_unfreeze,
            plateau_max_epochs=plateau_max_epochs,
        )
        self.name = name
        self.initial_groups = initial_groups
        self.every_n_epochs = every_n_epochs
        self.groups_per_step = groups_per_step
        self.max_groups = max_groups
        self.max_events = max_events
        self.on_plateau = on_plateau
        self.monitor = monitor
        self.patience = patience
        self.lr_scale_after_unfreeze = lr_scale_after_unfreeze
        self.plateau_max_epochs = plateau_max_epochs
        # Progress state, checkpointed: unfreeze events so far and plateau bookkeeping.
        self.events: list[dict[str, Any]] = []
        self.best = float("inf")
        self.bad_epochs = 0
        self.plateau_pending = False

    def _cap(self, n: int, total: int) -> int:
        n = total if n < 0 else min(n, total)
        return n if self.max_groups is None else min(n, self.max_groups)

    def _events_left(self) -> bool:
        return self.max_events is None or len(self.events) < self.max_events

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, FineTuneModule):
            raise TypeError("UnfreezeSchedule drives a thawkit FineTuneModule only")
        total = len(pl_module.backbone.groups)
        if self.max_groups is not None and not 0 <= self.max_groups <= total:
            raise ValueError(
                f"strategy.max_groups={self.max_groups} is outside [0, {total}]: "
                f"{pl_module.backbone.name} has {total} layer groups"
            )
        if self.initial_groups > total:
            names = [g.name for g in pl_module.backbone.groups]
            raise ValueError(
                f"strategy.initial_groups={self.initial_groups} > {total}, the number of layer "
                f"groups of {pl_module.backbone.name} ({names})"
            )
        self._fit_plateau_wait(trainer.max_epochs)
        # The starting state, before the optimizer is built. On a resume, the module's
        # on_load_checkpoint runs after this and replaces it with the saved frozen state.
        pl_module.set_trainable_groups(self._cap(self.initial_groups, total), step=0)

    def _fit_plateau_wait(self, max_epochs: int | None) -> None:
        """Cap `plateau_max_epochs` at `probe_epochs(max_epochs)`: a wait as long as the budget
        (lp_ft's 5 with trainer.max_epochs=5) would end the run before anything fine-tunes,
        and lp_ft would train exactly as feature_extraction. null (wait for the plateau) stays."""
        if not self.on_plateau or self.plateau_max_epochs is None or (max_epochs or 0) <= 0:
            return  # also without an epoch budget (max_epochs None or -1)
        wait = probe_epochs(max_epochs)
        if self.plateau_max_epochs > wait:
            log.warning(
                "strategy.plateau_max_epochs=%d with trainer.max_epochs=%d would leave no "
                "epochs to fine-tune in: the %s phase before the first unfreeze waits at most %d "
                "epoch(s) (set strategy.plateau_max_epochs=null to wait for the plateau only)",
                self.plateau_max_epochs, max_epochs, self.name, wait,
            )  # fmt: skip
            self.plateau_max_epochs = wait

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        total = len(pl_module.backbone.groups)
        current = pl_module.num_trainable_groups
        epoch_due = (
            not self.on_plateau
            and self.every_n_epochs is not None
            and trainer.current_epoch > 0
            and trainer.current_epoch % self.every_n_epochs == 0
            and not any(e["epoch"] == trainer.current_epoch for e in self.events)
        )
        waited_out = (
            self.on_plateau
            and self.plateau_max_epochs is not None
            and trainer.current_epoch - (self.events[-1]["epoch"] if self.events else 0)
            >= self.plateau_max_epochs
        )
        if not (epoch_due or self.plateau_pending or waited_out) or not self._events_left():
            return
        self.plateau_pending = False
        step = total if self.groups_per_step < 0 else self.groups_per_step
        target = self._cap(current + step, total)
        newly = pl_module.set_trainable_groups(
            target, step=trainer.global_step, lr_scale=self.lr_scale_after_unfreeze
        )
        if not newly:
            return
        self.events.append(
            {"epoch": trainer.current_epoch, "step": trainer.global_step, "groups": newly}
        )
        log.info(
            "Epoch %d: unfroze %s (%d of %d backbone groups train, %s trainable parameters)",
            trainer.current_epoch,
            ", ".join(newly),
            pl_module.num_trainable_groups,
            total,
            f"{pl_module.count_params(trainable=True):,}",
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        if not self.on_plateau or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        if float(value) < self.best - 1e-4:
            self.best, self.bad_epochs = float(value), 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                self.plateau_pending, self.bad_epochs = True, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "plateau_pending": self.plateau_pending,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.events = list(state_dict["events"])
        self.best = state_dict["best"]
        self.bad_epochs = state_dict["bad_epochs"]
        self.plateau_pending = state_dict["plateau_pending"]
