"""Temperature scaling: it lowers the NLL of an over-confident model and never changes a label."""

from __future__ import annotations

import torch

from thawkit.finetune.calibration import (
    calibration_record,
    expected_calibration_error,
    fit_temperature,
    nll,
)


def overconfident(n: int = 2000, classes: int = 5, sharpen: float = 4.0):
    """Labels drawn from softmax(z): z is calibrated, sharpen * z is over-confident."""
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(n, classes, generator=generator) * 1.5
    labels = torch.multinomial(z.softmax(dim=1), 1, generator=generator).squeeze(1)
    return z * sharpen, labels


def test_temperature_undoes_overconfidence() -> None:
    logits, labels = overconfident()
    t = fit_temperature(logits, labels)
    assert 3.0 < t < 5.0  # the sharpening it undoes is 4
    assert nll(logits, labels, t) < nll(logits, labels) - 0.5
    record = calibration_record(logits, labels, t)
    assert record["nll_after"] < record["nll_before"]
    assert record["ece_after"] < record["ece_before"] / 3
    # One scalar: argmax, so accuracy, is unchanged.
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))


def test_calibrated_model_keeps_about_one() -> None:
    logits, labels = overconfident(sharpen=1.0)
    assert abs(fit_temperature(logits, labels) - 1.0) < 0.15


def test_never_worse_than_no_scaling_and_ece_of_perfect_confidence() -> None:
    labels = torch.zeros(8, dtype=torch.long)  # one class only: any T > 0 fits
    logits = torch.tensor([[3.0, 0.0]]).repeat(8, 1)
    t = fit_temperature(logits, labels)
    assert nll(logits, labels, t) <= nll(logits, labels)
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, torch.tensor([0, 1])) == 0.0
