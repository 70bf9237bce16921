"""Fitting a strategy's unfreezing schedule into the epochs it is given (pure).

A schedule that unfreezes one group per epoch over EfficientNet-Lite0's 8 groups needs 8
epochs before its last group trains; with `trainer.max_epochs=5` given, the lower groups would
never train, and a plan that was meant as "gradual down to the stem" silently becomes "the top
four groups". `fit_schedule` compresses such a schedule instead: the groups the strategy means
to train are all training by epoch `max(1, epochs - 2)`, so at least two epochs (one when
`epochs` < 3) train the whole planned set. Compressing first shortens the interval between
events (`every_n_epochs`), then unfreezes more groups per event (`groups_per_step`). A plateau
schedule (LP-FT) gets its probe phase capped at `plateau_max_epochs = max(1, (epochs - 1) // 2)`
so fine-tuning has at least half the budget. Schedules that already fit are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from thawkit.finetune.unfreeze import probe_epochs


def _target(node: Mapping[str, Any], num_groups: int) -> int:
    cap = node.get("max_groups")
    return num_groups if cap is None else min(int(cap), num_groups)


def planned_groups(node: Mapping[str, Any], num_groups: int) -> int:
    """Backbone groups the schedule means to train by its end (given unlimited epochs)."""
    initial = int(node.get("initial_groups", 0))
    target = _target(node, num_groups)
    if initial < 0:
        return target
    if node.get("every_n_epochs") is None and not node.get("on_plateau"):
        return min(initial, target)
    events = node.get("max_events")
    step = int(node.get("groups_per_step", 1))
    if events is None or step < 0:
        return target
    return min(target, initial + step * int(events))


def reached_groups(node: Mapping[str, Any], num_groups: int, epochs: int) -> int:
    """Backbone groups training in the last of `epochs` epochs under an epoch schedule
    (a plateau schedule: assuming its probe phase runs `plateau_max_epochs`)."""
    initial = int(node.get("initial_groups", 0))
    target = _target(node, num_groups)
    if initial < 0:
        return target
    step = int(node.get("groups_per_step", 1))
    step = target if step < 0 else step
    if node.get("on_plateau"):
        wait = node.get("plateau_max_epochs")
        events = 0 if wait is None else (epochs - 1) // int(wait)
    elif node.get("every_n_epochs") is not None:
        events = (epochs - 1) // int(node["every_n_epochs"])
    else:
        events = 0
    if node.get("max_events") is not None:
        events = min(events, int(node["max_events"]))
    return min(target, initial + step * events)


def fit_schedule(
    node: Mapping[str, Any], num_groups: int, epochs: int
) -> tuple[dict[str, Any], str | None]:
    """Overrides of the strategy node that reach its planned groups within `epochs`.

    Returns:
        (overrides, reason): empty overrides and None when the schedule fits as it is.
    """
    initial = int(node.get("initial_groups", 0))
    if initial < 0 or epochs < 2:
        return {}, None
    goal = planned_groups(node, num_groups)
    if goal <= max(0, initial):
        return {}, None
    deadline = max(1, epochs - 2)  # every planned group trains from this epoch on
    if node.get("on_plateau"):
        wait = probe_epochs(epochs)
        current = node.get("plateau_max_epochs")
        if current is not None and int(current) <= wait:
            return {}, None
        return {"plateau_max_epochs": wait}, (
            f"with {epochs} epochs the probe phase waits at most {wait} epoch(s) for val/loss "
            f"to plateau, leaving {epochs - wait} to fine-tune"
        )
    every = node.get("every_n_epochs")
    if every is None:
        return {}, None
    step = int(node.get("groups_per_step", 1))
    step = goal - initial if step < 0 else step
    events = math.ceil((goal - initial) / step)
    if int(every) * events <= deadline:
        return {}, None
    overrides: dict[str, Any] = {}
    if events <= deadline:
        overrides["every_n_epochs"] = deadline // events
    else:
        overrides["every_n_epochs"] = 1
        overrides["groups_per_step"] = math.ceil((goal - initial) / deadline)
    if goal < num_groups and node.get("max_groups") is None:
        overrides["max_groups"] = goal  # bigger steps must not overshoot the plan
    fitted = {**dict(node), **overrides}
    steps = overrides.get("groups_per_step", step)
    return overrides, (
        f"{goal} of {num_groups} layer groups must train within {epochs} epochs: unfreezing "
        f"{steps} group(s) every {fitted['every_n_epochs']} epoch(s) has all {goal} training "
        f"by epoch {reach_epoch(fitted, num_groups)} (epochs count from 0)"
    )


def reach_epoch(node: Mapping[str, Any], num_groups: int) -> int:
    """The epoch from which an epoch schedule trains all its planned groups."""
    initial = max(0, int(node.get("initial_groups", 0)))
    goal = planned_groups(node, num_groups)
    if goal <= initial or node.get("every_n_epochs") is None:
        return 0
    step = int(node.get("groups_per_step", 1))
    step = goal - initial if step < 0 else step
    return int(node["every_n_epochs"]) * math.ceil((goal - initial) / step)
