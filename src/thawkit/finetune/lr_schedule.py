"""One learning-rate scheduler for every strategy: shape x warmup x frozen-gate, per named group.

Every layer group's LR at optimizer step s is

    lr = base_lr(group) * warm(s) * shape(s) * plateau_factor * phase_scale(group)

where base_lr is head_lr * decay**depth (set by the module), warm is a linear warmup from the
start for groups that train from step 0 and a re-warmup from their unfreeze step for groups
unfrozen later, shape is the chosen schedule, and a frozen group's LR is exactly 0. Because
the gate reads the module's frozen-state, the optimizer's groups never change.

The LR used at step s is a pure function of s, the run's configuration and the frozen state at
step s. So the checkpointed state is only the progress (step count, plateau bookkeeping): a
resumed run rebuilds the configuration from its own settings (a run resumed with a larger
`max_epochs` stretches its cosine over the new length, exactly as an uninterrupted run of that
length would) and `refresh()` recomputes the LRs after a resume or an unfreeze.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from thawkit.config.schema import SchedulerSchema, check_args
from thawkit.config.schema.training import SCHEDULES  # noqa: F401 - the names, for callers

# gate(layer_group) -> (step at which the group became trainable or None if frozen, LR scale)
Gate = Callable[[str], tuple[int | None, float]]


class FineTuneLR(LRScheduler):
    """Per-group LR schedule with warmup, re-warmup after unfreezing, and zero LR when frozen.

    Args:
        optimizer: optimizer whose param groups carry a `layer_group` key.
        name: schedule shape, one of `SCHEDULES`.
        total_steps: optimizer steps in the whole run (`trainer.estimated_stepping_batches`).
        steps_per_epoch: optimizer steps per epoch (converts the `*_epochs` settings).
        gate: tells, per layer group, when it became trainable and its LR scale.
        warmup_epochs: linear warmup from the first step (epochs; fractions allowed).
        warmup_steps: the same in steps; wins over warmup_epochs when set.
        rewarm_epochs: linear re-warmup of a group after it is unfrozen.
        min_lr_ratio: floor of cosine-like shapes, as a fraction of the base LR.
        step_epochs: period of the `step` shape; gamma: its factor.
        restart_epochs: period of `cosine_restarts`.
        plateau_patience, plateau_factor: `plateau` shape: multiply by factor after
            `patience` validations without improvement of the observed metric.
        pct_start: rising fraction of `onecycle`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        name: str = SchedulerSchema.name,
        *,
        total_steps: int,
        steps_per_epoch: int,
        gate: Gate,
        warmup_epochs: float = SchedulerSchema.warmup_epochs,
        warmup_steps: int | None = SchedulerSchema.warmup_steps,
        rewarm_epochs: float = SchedulerSchema.rewarm_epochs,
        min_lr_ratio: float = SchedulerSchema.min_lr_ratio,
        step_epochs: float = SchedulerSchema.step_epochs,
        gamma: float = SchedulerSchema.gamma,
        restart_epochs: float = SchedulerSchema.restart_epochs,
        plateau_patience: int = SchedulerSchema.plateau_patience,
        plateau_factor: float = SchedulerSchema.plateau_factor,
        pct_start: float = SchedulerSchema.pct_start,
    ) -> None:
        # The ranges and names are the schema's (thawkit.config.schema.SchedulerSchema).
        check_args(
            SchedulerSchema,
            "scheduler",
            name=name,
            warmup_epochs=warmup_epochs,
            warmup_steps=warmup_steps,
            rewarm_epochs=rewarm_epochs,
            min_lr_ratio=min_lr_ratio,
            step_epochs=step_epochs,
            gamma=gamma,
            restart_epochs=restart_epochs,
            plateau_patience=plateau_patience,
            plateau_factor=plateau_factor,
            pct_start=pct_start,
        )
        self.name = name
        self.gate = gate
        self.total_steps = max(1, int(total_steps))
        spe = max(1, int(steps_per_epoch))
        self.warmup_steps = int(
            warmup_steps if warmup_steps is not None else round(warmup_epochs * spe)
        )
        self.rewarm_steps = int(round(rewarm_epochs * spe))
        self.min_lr_ratio = min_lr_ratio
        self.step_steps = max(1, int(round(step_epochs * spe)))
        self.gamma = gamma
        self.restart_steps = max(1, int(round(restart_epochs * spe)))
        self.plateau_patience = plateau_patience
        self.plateau_factor = plateau_factor
        self.pct_start = pct_start
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad = 0
        super().__init__(optimizer)

    # Progress only: configuration comes from the constructor, the gate from the module.
    _STATE = (
        "last_epoch",
        "_step_count",
        "base_lrs",
        "_last_lr",
        "plateau_scale",
        "plateau_best",
        "plateau_bad",
    )

    def state_dict(self) -> dict:
        return {k: self.__dict__[k] for k in self._STATE if k in self.__dict__}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k in self._STATE})

    def refresh(self) -> None:
        """Write the LRs of the current step into the optimizer now.

        Called when the frozen state changes between steps (an unfreeze at an epoch start) and
        after a resume, so the very next optimizer step already uses them; otherwise the step
        would use LRs computed while the group was still frozen.
        """
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def shape(self, step: int) -> float:
        """The schedule's multiplier at `step` (1.0 at the end of warmup)."""
        w, total, floor = self.warmup_steps, self.total_steps, self.min_lr_ratio
        after = max(0, step - w)
        span = max(1, total - w)
        if self.name in ("constant", "plateau"):
            return 1.0
        if self.name == "step":
            return self.gamma ** (after // self.step_steps)
        if self.name == "cosine":
            p = min(1.0, after / span)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
        if self.name == "cosine_restarts":
            p = (after % self.restart_steps) / self.restart_steps
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
        # onecycle: cosine up from 1/25 over pct_start, then cosine down to the floor.
        rise = max(1, int(self.pct_start * total))
        if step < rise:
            lo = 1 / 25
            return lo + (1 - lo) * 0.5 * (1 - math.cos(math.pi * step / rise))
        p = min(1.0, (step - rise) / max(1, total - rise))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))

    def warm(self, step: int, since: int) -> float:
        """Linear warmup from the first step, or re-warmup from the step a group was unfrozen."""
        length = self.warmup_steps if since == 0 else self.rewarm_steps
        if length <= 0:
            return 1.0
        return min(1.0, (step - since + 1) / length)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        shape = self.shape(step) * self.plateau_scale
        lrs = []
        for base, group in zip(self.base_lrs, self.optimizer.param_groups, strict=True):
            since, scale = self.gate(group["layer_group"])
            lrs.append(0.0 if since is None else base * self.warm(step, since) * shape * scale)
        return lrs

    def observe(self, metric: float) -> None:
        """Feed a validation metric (lower is better) to the `plateau` shape."""
        if self.name != "plateau":
            return
        if metric < self.plateau_best - 1e-4:
            self.plateau_best, self.plateau_bad = metric, 0
            return
        self.plateau_bad += 1
        if self.plateau_bad > self.plateau_patience:
            self.plateau_scale *= self.plateau_factor
            self.plateau_bad = 0
            # At once, as ReduceLROnPlateau does: the next step already uses the lower LR
            # (and a run resumed from this validation's checkpoint agrees).
            self.refresh()
