"""The new classification head that sits on a backbone's pooled features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from thawkit.config.schema import HeadSchema, check_args


class _BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that accepts a training batch of one sample (uses running statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class Head(nn.Module):
    """Linear or MLP classifier on pooled features.

    Args:
        in_features: width of the backbone's pooled features.
        num_classes: number of output logits (2 for a binary task).
        kind: `linear` or `mlp`.
        hidden: hidden layer sizes of the MLP.
        dropout: dropout before every linear layer.
        batchnorm: BatchNorm1d after each hidden layer of the MLP.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        kind: str = HeadSchema.kind,
        hidden: Sequence[int] = (512,),  # HeadSchema.hidden (a list there)
        dropout: float = HeadSchema.dropout,
        batchnorm: bool = HeadSchema.batchnorm,
    ) -> None:
        super().__init__()
        check_args(HeadSchema, "model.head", kind=kind, dropout=dropout)
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden if kind == "mlp" else ():
            if dropout:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(width, h))
            if batchnorm:
                layers.append(_BatchNorm1d(h))
            layers.append(nn.ReLU(inplace=True))
            width = h
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


HEAD = "head"
