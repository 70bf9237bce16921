"""Optimizer parameter groups: discriminative LRs down the layer groups, and no weight decay on
norm weights and biases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from thawkit.finetune.module import HEAD, FineTuneModule
from thawkit.finetune.param_groups import layer_group_lrs, layered_param_groups


def test_lr_per_depth_and_no_decay_on_norms_and_biases() -> None:
    head = nn.Linear(4, 2)
    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    stem = nn.Conv2d(3, 3, 3, bias=False)
    layered = [
        ("head", list(head.parameters())),
        ("block", list(block.parameters())),
        ("stem", list(stem.parameters())),
    ]
    groups = layered_param_groups(layered, lr=1.0, lr_decay=0.5, weight_decay=0.01)
    by_name = {g["name"]: g for g in groups}
    # The stem has no 1-d parameter: its empty no-decay half is left out.
    assert list(by_name) == ["head", "head/no_decay", "block", "block/no_decay", "stem"]
    assert [by_name[n]["lr"] for n in by_name] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert {n: g["weight_decay"] for n, g in by_name.items()} == {
        "head": 0.01, "head/no_decay": 0.0, "block": 0.01, "block/no_decay": 0.0, "stem": 0.01,
    }  # fmt: skip
    # Conv kernel and linear weight decay; conv bias, BatchNorm weight and bias do not.
    assert by_name["head"]["params"] == [head.weight]
    assert by_name["head/no_decay"]["params"] == [head.bias]
    assert by_name["block/no_decay"]["params"] == [block[0].bias, block[1].weight, block[1].bias]
    assert {g["layer_group"] for g in groups} == {"head", "block", "stem"}


def test_module_groups_hold_every_parameter_once() -> None:
    module = FineTuneModule(3, "test_efficientnet", "none", lr=0.1, lr_decay=0.5)
    groups = module.param_groups()
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(module.parameters()))
    names = [HEAD] + [g.name for g in module.groups_top_down]
    lrs = {g["layer_group"]: g["lr"] for g in groups}
    assert list(lrs) == names
    assert [lrs[n] for n in names] == pytest.approx([0.1 * 0.5**d for d in range(len(names))])
    optimizer = torch.optim.AdamW(groups)
    assert layer_group_lrs(optimizer, prefix="lr/") == {f"lr/{n}": lrs[n] for n in names}
