"""Temperature scaling: one scalar T that makes softmax(logits / T) honest about its confidence.

Guo et al. (2017, "On Calibration of Modern Neural Networks") showed that fine-tuned networks
are over-confident and that dividing the logits by a single temperature fitted on held-out data
(minimising the negative log-likelihood) removes most of it without changing any prediction:
argmax(logits / T) = argmax(logits). thawkit fits T on the validation split after fit, on logits
collected once (`collect_logits`), stores it in the checkpoint as FineTuneModule's `temperature`
buffer (`write_temperature`), and every place that turns logits into probabilities divides by
it (predict, evaluate, the exported graph).

The calibration error is torchmetrics' expected calibration error (L1, equal-width bins).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import multiclass_calibration_error

ECE_BINS = 15  # Guo et al.'s number of equal-width confidence bins
LBFGS_STEPS = 50


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    return float(F.cross_entropy(logits.double() / temperature, labels))


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS
) -> float:
    """ECE: the confidence-weighted gap |accuracy - confidence| over `bins` equal-width bins."""
    return float(
        multiclass_calibration_error(probs.float(), labels, probs.shape[1], n_bins=bins, norm="l1")
    )


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = LBFGS_STEPS) -> float:
    """The temperature minimising the NLL of `labels` under softmax(logits / T).

    LBFGS on log T (so T stays positive), starting from T = 1, in float64 on the CPU: the
    problem is one-dimensional and convex in 1/T, so a few steps converge.
    """
    logits = logits.detach().double().cpu()
    labels = labels.detach().long().cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or nll(logits, labels, t) > nll(logits, labels, 1.0):
        return 1.0  # never worse than no scaling (e.g. a degenerate split of one class)
    return t


def calibration_record(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float, bins: int = ECE_BINS
) -> dict[str, Any]:
    """summary.json's `calibration`: the temperature and NLL and ECE before and after it."""
    before = logits.double().softmax(dim=1)
    after = (logits.double() / temperature).softmax(dim=1)
    return {
        "temperature": temperature,
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, temperature),
        "ece_before": expected_calibration_error(before, labels, bins),
        "ece_after": expected_calibration_error(after, labels, bins),
        "bins": bins,
        "num_images": int(len(labels)),
    }


@torch.no_grad()
def collect_logits(
    module: torch.nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uncalibrated logits and labels of every batch of `loader` (module in eval mode)."""
    module.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(module(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(logits), torch.cat(labels).long()


def write_temperature(ckpt_path: str | os.PathLike, temperature: float) -> None:
    """Store `temperature` in a checkpoint file's state dict, replacing the file atomically."""
    path = Path(ckpt_path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    value = torch.tensor(float(temperature))
    ckpt["state_dict"]["temperature"] = value
    if "current_model_state" in ckpt:  # EMA: the raw weights a resume continues from
        ckpt["current_model_state"]["temperature"] = value
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)  # a reader sees the old file or the new one, never half of it
    finally:
        Path(tmp).unlink(missing_ok=True)
