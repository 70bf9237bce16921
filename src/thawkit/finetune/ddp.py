"""DDP that keeps every rank's weights identical while layer groups unfreeze mid-run.

DistributedDataParallel registers, at the moment it wraps the model, only the parameters that
require grad. A layer group unfrozen later would then train on each rank's own gradients,
never all-reduced, and the ranks would drift apart silently (docs/architecture.md, "DDP and
groups that thaw mid-run").

`FreezeAwareDDPStrategy` makes every parameter require grad for the moment of the wrap, so DDP
registers all of them, and puts the frozen state back right after. A frozen parameter then
simply produces no gradient in a step; DDP must be told that parameters may go unused
(`find_unused_parameters=True`), or it would wait for their gradients forever. The optimizer
already holds every group from step 0, so nothing else changes when a group thaws.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import DDPStrategy, Strategy


class FreezeAwareDDPStrategy(DDPStrategy):
    """Lightning's DDP strategy, registering frozen parameters too (see the module docstring).

    Args:
        find_unused_parameters: must stay True: frozen groups produce no gradients.
        **kwargs: everything else `lightning.pytorch.strategies.DDPStrategy` takes
            (process_group_backend, start_method, timeout, ...).
    """

    def __init__(self, *args: Any, find_unused_parameters: bool = True, **kwargs: Any) -> None:
        if not find_unused_parameters:
            raise ValueError(
                "FreezeAwareDDPStrategy needs find_unused_parameters=True: frozen layer groups "
                "produce no gradients, and DDP would wait for them. Remove the override."
            )
        super().__init__(*args, find_unused_parameters=True, **kwargs)

    def configure_ddp(self) -> None:
        params = list(self.model.parameters())
        frozen_state = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        try:
            super().configure_ddp()
        finally:
            for p, flag in zip(params, frozen_state, strict=True):
                p.requires_grad_(flag)


def check_strategy(strategy: Strategy) -> None:
    """Refuse Lightning's plain DDP: it silently desynchronises groups unfrozen mid-run."""
    if isinstance(strategy, DDPStrategy) and not isinstance(strategy, FreezeAwareDDPStrategy):
        raise ValueError(
            f"trainer.strategy={type(strategy).__name__} registers only the parameters that train "
            "when it wraps the model: groups unfrozen later would drift apart across ranks. "
            "Use trainer=ddp (GPUs) or trainer=ddp_cpu (CPU processes), or set "
            "trainer.strategy._target_=thawkit.finetune.ddp.FreezeAwareDDPStrategy."
        )
