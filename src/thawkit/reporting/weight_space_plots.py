"""Plots of the weight-space steps of a run: WiSE-FT's curve over `a`, the LR finder's curve."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from thawkit.reporting.plots import new_figure


def wiseft_figure(record: Mapping[str, Any]) -> Figure:
    """Accuracy (val, and test when measured) against a, the chosen a marked."""
    fig = new_figure(5.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    curve = record["curve"]
    alphas = [row["a"] for row in curve]
    for key, style in (("val/acc", "o-"), ("test/acc", "s--")):
        if all(key in row for row in curve):
            ax.plot(alphas, [row[key] for row in curve], style, label=key)
    ax.axvline(
        record["chosen"], color="grey", linestyle=":", label=f"chosen a={record['chosen']:g}"
    )
    ax.set_xlabel("a:  (1 - a) * start + a * fine-tuned")
    ax.set_ylabel("accuracy")
    ax.set_title("WiSE-FT")
    ax.legend(loc="best", fontsize=8)
    return fig


def lr_find_figure(record: Mapping[str, Any]) -> Figure:
    """The LR finder's loss against the learning rate (log scale), the suggestion marked."""
    fig = new_figure(5.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(record["lr"], record["loss"], label="loss", alpha=0.5)
    if record.get("smoothed"):
        ax.plot(record["lr"], record["smoothed"], label="smoothed")
    if record.get("suggested") is not None:
        ax.axvline(record["suggested"], color="red", linestyle=":", label="suggested")
    ax.set_xscale("log")
    ax.set_xlabel("head learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("LR finder")
    ax.legend(loc="best", fontsize=8)
    return fig
