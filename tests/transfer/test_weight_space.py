"""Weight arithmetic (transfer/weight_space.py): interpolating, averaging, BatchNorm statistics."""

from __future__ import annotations

import torch
from torch import nn

from thawkit.transfer.weight_space import (
    average,
    interpolate,
    norms_that_differ,
    recalibrate_bn,
)


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 2),
    )  # fmt: skip


def state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def with_stats(net: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm running statistics of its own (a few train-mode batches)."""
    torch.manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 3, 8, 8) + seed)
    return net.eval()


def test_interpolation_endpoints_are_the_models_bit_for_bit() -> None:
    a, b = state(with_stats(small_net(0), 0)), state(with_stats(small_net(1), 1))
    for key, value in interpolate(a, b, 0.0).items():
        assert torch.equal(value, a[key]), key
    for key, value in interpolate(a, b, 1.0).items():
        assert torch.equal(value, b[key]), key
    mid = interpolate(a, b, 0.25)
    w = "0.weight"
    torch.testing.assert_close(mid[w], 0.75 * a[w] + 0.25 * b[w])
    assert torch.equal(mid["1.num_batches_tracked"], b["1.num_batches_tracked"])


def test_average_of_copies_is_the_copy_and_of_two_is_the_midpoint() -> None:
    a, b = state(with_stats(small_net(0), 0)), state(with_stats(small_net(1), 1))
    for key, value in average([a, a]).items():
        assert torch.equal(value, a[key]), key
    torch.testing.assert_close(average([a, b])["8.weight"], (a["8.weight"] + b["8.weight"]) / 2)


def test_norms_that_differ_names_only_those() -> None:
    net = small_net(0)
    a = state(with_stats(net, 0))
    b = dict(a)
    b["5.running_mean"] = a["5.running_mean"] + 1
    assert norms_that_differ(net, [a, b]) == ["5"]
    assert norms_that_differ(net, [a, a]) == []


def test_recalibration_changes_running_statistics_only() -> None:
    net = with_stats(small_net(0), 0)
    net.train()  # modes are restored afterwards
    before = state(net)
    batches = [(torch.randn(4, 3, 8, 8) * 3 + 2, torch.zeros(4)) for _ in range(3)]
    seen = recalibrate_bn(net, batches, norms=["1"], max_images=10)
    assert seen == 10
    after = state(net)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # (the counter may end where it was: reset, then one count per batch)
    assert changed - {"1.num_batches_tracked"} == {"1.running_mean", "1.running_var"}
    assert all(m.training for m in net.modules())  # modes restored
    assert net[1].momentum == 0.1  # momentum restored
    # The statistics are the images' (cumulative mean over the batches seen, as update_bn).
    again = with_stats(small_net(0), 0)
    recalibrate_bn(again, batches, max_images=10)
    assert torch.equal(state(again)["1.running_mean"], after["1.running_mean"])
    assert not torch.equal(state(again)["5.running_mean"], after["5.running_mean"])
