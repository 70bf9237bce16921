"""Every strategy, step by step, on the toy backbone: what trains, BatchNorm modes, statistics, LRs.

Runs go through the real composed Hydra config and `thawkit.run.train.build`, with a `Probe`
callback (tools/probes/finetune_probe.py). The expectations below are written from the strategies'
configs (src/thawkit/conf/strategy/*.yaml), not from the code under test:

- test_efficientnet has 6 layer groups, stem .. stage_5; strategies unfreeze from the top.
- 24 training images, batch 6: 4 optimizer steps per epoch; a validation after steps 2 and 4
  of every epoch (trainer.val_check_interval=0.5).
- scheduler=constant with a 1-epoch warmup (4 steps) and a 0.5-epoch re-warmup (2 steps).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from conftest import make_image_folder, tiny_cfg
from finetune_probe import Probe, fit_with_probe
from thawkit.finetune.module import FineTuneModule
from thawkit.finetune.unfreeze import UnfreezeSchedule

GROUPS = ["stem", "stage_1", "stage_2", "stage_3", "stage_4", "stage_5"]
TOP_DOWN = GROUPS[::-1]
STEPS_PER_EPOCH = 4
WARMUP, REWARM = 4, 2  # steps
EPOCHS = 3

# Backbone groups (from the top) that train in epoch e, as each strategy's config states.
PLAN = {
    "feature_extraction": lambda e: 0,
    "partial": lambda e: 3,  # initial_groups: 3
    "gradual": lambda e: e,  # one more every epoch
    "full": lambda e: 6,
    "two_phase": lambda e: 0 if e < 2 else 6,  # every_n_epochs: 2, then all
    "scratch": lambda e: 6,
}
# two_phase: lr_scale_after_unfreeze: 0.5 from its unfreeze on.
LR_SCALE = {"two_phase": lambda e: 0.5 if e >= 2 else 1.0}
STRATEGIES = list(PLAN)


@dataclass
class Run:
    cfg: DictConfig
    probe: Probe
    model: FineTuneModule
    trainer: L.Trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """`run("strategy=gradual", ...)`: fit once per module with these overrides, with a probe."""
    root = make_image_folder(tmp_path_factory.mktemp("images"), (12, 12), ("train", "val"))
    cache: dict[tuple, Run] = {}

    def get(*overrides: str, epochs: int = EPOCHS, mid_epoch_val: bool = True) -> Run:
        key = (overrides, epochs, mid_epoch_val)
        if key not in cache:
            base = [
                "scheduler=constant",
                "scheduler.warmup_epochs=1",
                "scheduler.rewarm_epochs=0.5",
                "data.batch_size=6",
                f"trainer.max_epochs={epochs}",
                # The probe watches the backbone's forward in every step; the feature cache
                # skips it in head-only epochs (tests/data/test_feature_cache.py covers that).
                "callbacks.speed.feature_cache=false",
            ]
            if mid_epoch_val:
                base.append("+trainer.val_check_interval=0.5")
            cfg = tiny_cfg(tmp_path_factory.mktemp("run"), [*base, *overrides], data_root=root)
            probe, model, trainer = fit_with_probe(cfg)
            cache[key] = Run(cfg, probe, model, trainer)
        return cache[key]

    return get


def trainable_groups(strategy: str, epoch: int) -> set[str]:
    return set(TOP_DOWN[: PLAN[strategy](epoch)])


def stats_frozen(policy: str, trainable: bool) -> bool:
    """The BatchNorm policy of docs/architecture.md, restated: where statistics stay fixed."""
    return policy == "all" or (policy == "frozen_groups" and not trainable)


def expected_lrs(strategy: str, step: int, lr: float, decay: float) -> dict[str, float]:
    """Every layer group's LR at `step` (constant shape): base * warm * scale, 0 when frozen."""
    epoch = step // STEPS_PER_EPOCH
    since = {"head": 0}
    for e in range(epoch + 1):
        for g in trainable_groups(strategy, e):
            since.setdefault(g, e * STEPS_PER_EPOCH)
    scale = LR_SCALE.get(strategy, lambda e: 1.0)(epoch)
    out = {}
    for depth, name in enumerate(["head", *TOP_DOWN]):
        if name not in since:
            out[name] = 0.0
            continue
        if since[name] == 0:
            warm = min(1.0, (step + 1) / WARMUP)
        else:  # re-warmup from the unfreeze step, starting at its very first step
            warm = min(1.0, (step - since[name] + 1) / REWARM)
        out[name] = lr * decay**depth * warm * scale
    return out


# ----------------------------------------------------------------------------- every strategy
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_requires_grad_per_epoch(strategy: str, run) -> None:
    r = run(f"strategy={strategy}")
    assert r.probe.at_train_start is not None
    start = r.probe.at_train_start["requires_grad"]  # before any training step
    for g in GROUPS:
        assert set(start[g]["weights"]) == {g in trainable_groups(strategy, 0)}, g
    assert len(r.probe.rows) == EPOCHS * STEPS_PER_EPOCH
    for row in r.probe.rows:
        expected = trainable_groups(strategy, row["epoch"])
        for g in GROUPS:
            grads = row["requires_grad"][g]
            assert set(grads["weights"]) == {g in expected}, (row["epoch"], g)
            assert set(grads["norms"]) == {g in expected}, (row["epoch"], g)
        assert all(row["requires_grad"]["head"]["weights"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batchnorm_modes_and_statistics(strategy: str, run) -> None:
    r = run(f"strategy={strategy}")
    # Two validations per epoch: one of them in the middle of the training steps.
    assert r.probe.validations == [e for e in range(EPOCHS) for _ in range(2)]
    for row in r.probe.rows:
        expected = trainable_groups(strategy, row["epoch"])
        for g in GROUPS:
            train_mode = not stats_frozen("frozen_groups", g in expected)
            # The mode each BatchNorm had while its forward ran in this training step.
            assert set(row["bn_train"][g]) == {train_mode}, (row["step"], g)
            # Statistics move exactly where BatchNorm is in train mode.
            assert set(row["stats_changed"][g]) == {train_mode}, (row["step"], g)
    for epoch, (start, end) in r.probe.epoch_buffers.items():
        for g in GROUPS:
            if g not in trainable_groups(strategy, epoch):  # frozen all epoch, validation included
                for a, b in zip(start[g], end[g], strict=True):
                    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), (epoch, g)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_learning_rates_per_step(strategy: str, run) -> None:
    r = run(f"strategy={strategy}")
    lr, decay = r.cfg.model.lr, r.cfg.model.lr_decay
    for row in r.probe.rows:
        want = expected_lrs(strategy, row["step"], lr, decay)
        for name, got in row["lr"].items():  # "stage_5" and "stage_5/no_decay" alike
            assert got == pytest.approx(want[name.split("/")[0]], rel=1e-9, abs=0), (
                row["step"],
                name,
            )
    last = r.probe.rows[-1]["lr"]
    trained = [g for g in TOP_DOWN if last[g] > 0]
    if strategy == "scratch":  # one LR for everything
        assert decay == 1.0 and {last[g] for g in trained} == {last["head"]}
    else:  # discriminative: lr_g = head_lr * decay**depth once warm
        for depth, g in enumerate(TOP_DOWN, 1):
            if g in trained:
                assert last[g] / last["head"] == pytest.approx(decay**depth)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_optimizer_layout_never_changes(strategy: str, run) -> None:
    r = run(f"strategy={strategy}")
    layouts = {row["layout"] for row in r.probe.rows}
    assert len(layouts) == 1
    _, groups = layouts.pop()
    # Every parameter is in the optimizer from step 0, frozen ones included, exactly once.
    ids = [i for _, params in groups for i in params]
    assert sorted(ids) == sorted(id(p) for p in r.model.parameters())
    names = {name.split("/")[0] for name, _ in groups}
    assert names == {"head", *GROUPS}


def test_two_phase_scales_lr_and_rewarms_after_unfreeze(run) -> None:
    r = run("strategy=two_phase")
    rows = r.probe.rows
    lr = rows[0]["lr"]
    first_after = rows[2 * STEPS_PER_EPOCH]["lr"]  # the first step of phase two
    before = rows[2 * STEPS_PER_EPOCH - 1]["lr"]
    assert before["stage_5"] == 0.0 and lr["stage_5"] == 0.0
    assert first_after["head"] == pytest.approx(0.5 * before["head"])
    # The unfrozen groups start their re-warmup at once (not with an LR of 0 for one step).
    decay = r.cfg.model.lr_decay
    assert first_after["stage_5"] == pytest.approx(before["head"] * decay * 0.5 / REWARM)


def test_feature_extraction_leaves_backbone_bitwise_equal(tmp_path, make_cfg) -> None:
    probe = Probe()
    cfg = make_cfg("strategy=feature_extraction", "+trainer.val_check_interval=0.5")
    _, model, _ = fit_with_probe(cfg, probe)
    assert probe.initial_backbone is not None
    final = model.backbone.state_dict()
    assert final.keys() == probe.initial_backbone.keys()
    for name, tensor in final.items():  # weights and running statistics alike
        assert torch.equal(tensor, probe.initial_backbone[name]), name
    # The head did train (so the run above was not a no-op).
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.head.state_dict().values(), probe.initial_head.values(), strict=True)
    )


@pytest.mark.slow
def test_feature_extraction_keeps_bundled_lite0_bitwise(make_cfg) -> None:
    """The real pretrained EfficientNet-Lite0: a few batches at 64 px change none of its tensors."""
    import timm

    from thawkit.models.weights import bundled_state_dict

    cfg = make_cfg(
        "strategy=feature_extraction",
        "model.backbone=tf_efficientnet_lite0",
        "model.weights=bundled",
        "data.image_size=64",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=2",
    )
    probe, model, _ = fit_with_probe(cfg)
    assert len(probe.rows) == 4 and all(
        not any(m for ms in r["bn_train"].values() for m in ms) for r in probe.rows
    )
    pretrained = bundled_state_dict(timm.create_model("tf_efficientnet_lite0").state_dict())
    final = model.backbone.model.state_dict()
    assert set(pretrained) - set(final) == {"classifier.weight", "classifier.bias"}
    for name, tensor in final.items():
        assert torch.equal(tensor, pretrained[name]), name
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.head.state_dict().values(), probe.initial_head.values(), strict=True)
    )


# ----------------------------------------------------------------------------- BatchNorm policies
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("policy", ["frozen_groups", "all", "none"])
def test_batchnorm_policy(policy: str, affine: bool, run) -> None:
    overrides = ["strategy=gradual"]
    if (policy, affine) != ("frozen_groups", False):  # the defaults: share the strategy run
        overrides += [f"model.bn_policy={policy}", f"model.bn_freeze_affine={affine}"]
    r = run(*overrides)
    for row in r.probe.rows:
        expected = trainable_groups("gradual", row["epoch"])
        for g in GROUPS:
            frozen = stats_frozen(policy, g in expected)
            assert set(row["bn_train"][g]) == {not frozen}, (policy, row["step"], g)
            assert set(row["stats_changed"][g]) == {not frozen}, (policy, row["step"], g)
            assert set(row["requires_grad"][g]["weights"]) == {g in expected}
            norms_train = g in expected and not (affine and frozen)
            assert set(row["requires_grad"][g]["norms"]) == {norms_train}, (policy, affine, g)
    # Affine parameters frozen by the policy never move; trained conv weights do.
    initial, final = r.probe.initial_backbone, r.model.backbone.state_dict()
    stage_5 = r.model.backbone.group("stage_5")  # trains from epoch 1 on
    norm_ids = {id(p) for n in stage_5.norms for p in n.parameters()}
    by_id = {id(p): n for n, p in r.model.backbone.named_parameters()}
    for p in stage_5.params:
        moved = not torch.equal(final[by_id[id(p)]], initial[by_id[id(p)]])
        frozen_affine = affine and policy == "all"
        assert moved == (id(p) not in norm_ids or not frozen_affine), by_id[id(p)]


# ----------------------------------------------------------------------------- plateau
def test_gradual_on_plateau_in_a_run(run) -> None:
    # A tiny LR and fixed BatchNorm statistics keep val/loss flat (changes << 1e-4): every
    # validation after the first is a plateau. every_n_epochs (1 in gradual.yaml) is ignored.
    r = run(
        "strategy=gradual",
        "strategy.on_plateau=true",
        "model.lr=1e-12",
        "model.bn_policy=all",
        epochs=4,
        mid_epoch_val=False,
    )
    per_epoch = [
        {g for g in GROUPS if all(row["requires_grad"][g]["weights"])}
        for row in r.probe.rows[::STEPS_PER_EPOCH]
    ]
    assert per_epoch == [set(), set(), {"stage_5"}, {"stage_5", "stage_4"}]
    schedule = next(c for c in r.trainer.callbacks if isinstance(c, UnfreezeSchedule))
    assert [e["epoch"] for e in schedule.events] == [2, 3]
    assert [e["groups"] for e in schedule.events] == [["stage_5"], ["stage_4"]]


def _fake_trainer(epoch: int, metric: float | None = None, sanity: bool = False) -> Any:
    metrics = {} if metric is None else {"val/loss": torch.tensor(metric)}
    return SimpleNamespace(
        current_epoch=epoch,
        global_step=10 * epoch,
        callback_metrics=metrics,
        sanity_checking=sanity,
        max_epochs=10,
    )


def test_plateau_logic_with_a_controlled_metric() -> None:
    module = FineTuneModule(2, "test_efficientnet", "none")
    cb = UnfreezeSchedule("gradual", every_n_epochs=1, on_plateau=True, patience=2)
    cb.setup(_fake_trainer(0), module, "fit")
    # patience 2: two validations without an improvement of more than 1e-4 make a plateau.
    metrics = [1.0, 0.9, 0.95, 0.92, 0.5, 0.5, 0.5, 0.49995, 0.4, 0.41]
    trained = []
    for epoch, value in enumerate(metrics):
        cb.on_train_epoch_start(_fake_trainer(epoch), module)
        trained.append(module.num_trainable_groups)
        cb.on_validation_end(_fake_trainer(epoch, sanity=True, metric=0.0), module)  # ignored
        cb.on_validation_end(_fake_trainer(epoch), module)  # no metric logged: ignored
        cb.on_validation_end(_fake_trainer(epoch, value), module)
    assert trained == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [e["epoch"] for e in cb.events] == [4, 7]
    assert module.trainable_since["stage_5"] == 40 and module.trainable_since["stage_4"] == 70
    # The plateau bookkeeping survives a checkpoint round trip.
    again = UnfreezeSchedule("gradual", on_plateau=True, patience=2)
    again.load_state_dict(cb.state_dict())
    assert again.state_dict() == cb.state_dict() and again.best == pytest.approx(0.4)


# ----------------------------------------------------------------------------- errors, warnings
def test_bad_schedule_settings_fail_clearly() -> None:
    with pytest.raises(ValueError, match="every_n_epochs"):
        UnfreezeSchedule(every_n_epochs=0)
    with pytest.raises(ValueError, match="groups_per_step"):
        UnfreezeSchedule(groups_per_step=0)
    module = FineTuneModule(2, "test_efficientnet", "none")
    with pytest.raises(ValueError, match=r"initial_groups=7 > 6.*stage_5"):
        UnfreezeSchedule(initial_groups=7).setup(_fake_trainer(0), module, "fit")
    with pytest.raises(ValueError, match=r"max_groups=9 is outside \[0, 6\]"):
        UnfreezeSchedule(max_groups=9).setup(_fake_trainer(0), module, "fit")


class _EvalHead(L.Callback):
    """Puts a head layer in eval mode before fit: a mistake Lightning's warning should catch."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: FineTuneModule) -> None:
        pl_module.head.layers[0].eval()


@pytest.mark.parametrize("extra_eval_module", [False, True])
def test_eval_mode_warning_only_for_unexpected_modules(extra_eval_module: bool, make_cfg) -> None:
    cfg = make_cfg("strategy=gradual", "trainer.max_epochs=1", "+trainer.limit_train_batches=1")
    datamodule, model, trainer = _build_quiet(cfg)
    if extra_eval_module:
        trainer.callbacks.insert(0, _EvalHead())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=datamodule)
    found = [w for w in caught if "eval mode at the start of training" in str(w.message)]
    frozen_norms = sum(len(g.norms) for g in model.backbone.groups)
    if extra_eval_module:  # the frozen norms plus the head layer: Lightning warns
        assert len(found) == 1 and f"Found {frozen_norms + 1} module(s)" in str(found[0].message)
    else:  # only the BatchNorm layers the policy froze: nothing to warn about
        assert found == []
    # The filter lived only until training started.
    assert not any("eval mode" in getattr(f[1], "pattern", "") for f in warnings.filters)


def _build_quiet(cfg: DictConfig):
    from omegaconf import open_dict

    from thawkit.run.train import build

    with open_dict(cfg):
        cfg.logger = None
        cfg.callbacks.early_stopping = None
    return build(cfg)


def test_lr_formula_sanity() -> None:
    # The expectation helper itself: gradual's stage_5 unfreezes at step 4 and re-warms.
    lrs = [expected_lrs("gradual", s, 1.0, 0.5)["stage_5"] for s in range(8)]
    assert lrs == [0.0] * 4 + [0.25, 0.5, 0.5, 0.5]
    assert math.isclose(expected_lrs("gradual", 0, 1.0, 0.5)["head"], 0.25)


@pytest.mark.parametrize("policy", ["frozen_groups", "all", "none"])
def test_train_reapplies_batchnorm_policy(policy: str) -> None:
    # Lightning restores each module's mode around validation itself; a plain `train()` call
    # (user code, another loop) must still honour the policy, which the override re-applies.
    module = FineTuneModule(2, "test_efficientnet", "none", bn_policy=policy)
    module.set_trainable_groups(2, step=0)
    module.eval()
    assert not any(m.training for m in module.modules())
    module.train()
    for group in module.backbone.groups:
        trainable = group.name in ("stage_5", "stage_4")
        assert {n.training for n in group.norms} == {not stats_frozen(policy, trainable)}
    # Only the norms themselves: everything else (their activation children included) trains.
    norms = {id(n) for g in module.backbone.groups for n in g.norms}
    assert all(m.training for m in module.modules() if id(m) not in norms)
