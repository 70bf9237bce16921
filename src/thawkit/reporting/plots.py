"""Figures of a run: learning curves, confusion matrix, class counts and image grids.

Every figure is a plain `matplotlib.figure.Figure` rendered by the Agg canvas: no pyplot, no
window, no global backend switch, so the same figures go to PNG files and to TensorBoard from
training, tests, notebooks and headless servers alike.

`write_run_plots` draws a run's `plots/` from its summary.json; `python -m thawkit.reporting.plots
RUN_DIR`
redraws them for an existing run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

# Annotating every cell stops being readable beyond this many classes.
MAX_ANNOTATED_CLASSES = 25


def new_figure(width: float, height: float) -> Figure:
    """A figure attached to an Agg canvas (renders without any GUI backend)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an RGB uint8 array (H, W, 3)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure as PNG (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


# --------------------------------------------------------------------------- run figures
def curves_figure(
    history: Sequence[Mapping[str, Any]],
    unfreeze_events: Sequence[Mapping[str, Any]] = (),
    best_epoch: int | None = None,
) -> Figure:
    """Train/val loss and accuracy against epoch, unfreeze epochs marked as dashed lines."""
    fig = new_figure(11, 4.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, metric, title in ((ax_loss, "loss", "Loss"), (ax_acc, "acc", "Accuracy")):
        # Train metrics come from augmented (and possibly mixed) batches, in training mode.
        for stage, style, label in (("train", "-o", "train (augmented)"), ("val", "-s", "val")):
            key = f"{stage}/{metric}"
            points = [(r["epoch"], r[key]) for r in history if key in r]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, label=label, markersize=4)
        for i, event in enumerate(unfreeze_events):
            groups = event.get("groups", [])
            label = "unfreeze" if i == 0 else None
            ax.axvline(event["epoch"] - 0.5, color="tab:gray", linestyle="--", label=label)
            if ax is ax_loss and groups:
                name = groups[0] if len(groups) == 1 else f"{len(groups)} groups"
                ax.annotate(
                    name,
                    (event["epoch"] - 0.5, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(-2, -4),
                    textcoords="offset points",
                    rotation=90,
                    va="top",
                    ha="right",
                    fontsize=8,
                    color="tab:gray",
                )
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", linestyle=":", label="best")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if metric == "acc":
            ax.set_ylim(0, 1.02)
        epochs = [r["epoch"] for r in history]
        if epochs:
            ax.set_xticks(range(min(epochs), max(epochs) + 1, max(1, (max(epochs) + 1) // 15)))
    return fig


def _confusion_values(
    matrix: np.ndarray | torch.Tensor | Sequence[Sequence[float]], normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The counts and what the figure shows of them (row-normalised to recall, or the counts)."""
    counts = np.asarray(matrix.cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shown = (
        np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        if normalize
        else counts
    )
    return counts, shown


def _confusion_title(title: str, counts: np.ndarray) -> str:
    total = int(counts.sum())
    acc = np.trace(counts) / total if total else 0.0
    return f"{title}\n{total} images, accuracy {acc:.3f}"


def _confusion_cells(
    ax: Any, counts: np.ndarray, shown: np.ndarray, normalize: bool, animated: bool = False
) -> list[Any]:
    """Annotate the cells (empty off-diagonal cells stay blank); returns the texts."""
    n = len(counts)
    if n > MAX_ANNOTATED_CLASSES:
        return []
    texts = []
    for i in range(n):
        for j in range(n):
            if counts[i, j] == 0 and i != j:
                continue
            text = (
                f"{shown[i, j]:.2f}\n({int(counts[i, j])})" if normalize else f"{int(counts[i, j])}"
            )
            colour = "white" if shown[i, j] > 0.6 * (shown.max() or 1) else "black"
            texts.append(
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=7, color=colour,
                    animated=animated,
                )
            )  # fmt: skip
    return texts


def confusion_figure(
    matrix: np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    class_names: Sequence[str],
    title: str = "Confusion matrix",
    normalize: bool = True,
) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), row-normalised to recall."""
    counts, shown = _confusion_values(matrix, normalize)
    n = len(class_names)
    side = min(16.0, max(4.5, 0.55 * n + 2.5))
    fig = new_figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    ax.set_xticks(
        range(n), class_names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center"
    )
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_confusion_title(title, counts))
    _confusion_cells(ax, counts, shown, normalize)
    return fig


class ConfusionView:
    """`confusion_figure` (row-normalised) of one set of classes, drawn again for every matrix.

    A validation epoch's figure for TensorBoard: built and laid out from scratch it cost 60-120
    ms on a 2-core CPU, most of it text, ticks and the colorbar, none of which change between
    epochs (the same classes, a colour scale fixed at 0-1). This lays the figure out once, keeps
    the unchanging part as a rendered background, and for each matrix draws only the image, the
    cell texts, the frame and the title over it (matplotlib's blitting, ~13 ms): the same figure
    (the frame's anti-aliased edge pixels aside), for the per-epoch budget of docs/architecture.md
    ("Epochs on cached features").

    Args:
        class_names: the classes, in the matrix's order.
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self._fig: Figure | None = None
        self._background: Any = None
        self._texts: list[Any] = []

    def render(
        self, matrix: np.ndarray | torch.Tensor | Sequence[Sequence[float]], title: str
    ) -> np.ndarray:
        """The figure of `matrix` titled `title`, as an RGB uint8 array (H, W, 3)."""
        counts, shown = _confusion_values(matrix, normalize=True)
        if counts.shape != (len(self.class_names),) * 2:
            raise ValueError(
                f"a {counts.shape} confusion matrix for {len(self.class_names)} classes"
            )
        if self._fig is None:
            self._layout(counts, title)
        fig = self._fig
        assert fig is not None
        ax = fig.axes[0]
        image = ax.images[0]
        image.set_data(shown)
        ax.title.set_text(_confusion_title(title, counts))
        for text in self._texts:
            text.remove()
        self._texts = _confusion_cells(ax, counts, shown, normalize=True, animated=True)
        canvas = fig.canvas
        canvas.restore_region(self._background)
        # In the order of a full draw: image (zorder 0), frame (2.5), texts (3), title.
        ax.draw_artist(image)
        for spine in ax.spines.values():
            ax.draw_artist(spine)
        for text in self._texts:
            ax.draw_artist(text)
        ax.draw_artist(ax.title)
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    def _layout(self, counts: np.ndarray, title: str) -> None:
        # The first matrix lays the figure out (constrained layout, as confusion_figure); then
        # the layout is frozen and the changing artists leave the background.
        fig = confusion_figure(counts, self.class_names, title)
        fig.canvas.draw()
        fig.set_layout_engine("none")
        ax = fig.axes[0]
        for artist in (ax.images[0], ax.title, *ax.texts):
            artist.set_animated(True)
        self._texts = list(ax.texts)
        fig.canvas.draw()
        self._background = fig.canvas.copy_from_bbox(fig.bbox)
        self._fig = fig


def class_counts_figure(class_counts: Mapping[str, Mapping[str, int]]) -> Figure:
    """Images per class in every split, as grouped horizontal bars."""
    splits = list(class_counts)
    names = list(next(iter(class_counts.values()))) if splits else []
    fig = new_figure(8, max(2.5, 0.35 * len(names) * max(1, len(splits)) ** 0.5 + 1.2))
    ax = fig.subplots()
    height = 0.8 / max(1, len(splits))
    y = np.arange(len(names))
    for k, split in enumerate(splits):
        values = [class_counts[split].get(name, 0) for name in names]
        bars = ax.barh(y + k * height, values, height, label=f"{split} ({sum(values)})")
        ax.bar_label(bars, fontsize=7, padding=2)
    ax.set_yticks(y + height * (len(splits) - 1) / 2, names)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title("Images per class")
    ax.margins(x=0.08)  # room for the count labels
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)


def short(name: str, limit: int = 14) -> str:
    """A class name cut to `limit` characters, so grid titles stay inside their cell."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def image_grid_figure(
    images: Sequence[np.ndarray],
    titles: Sequence[str] = (),
    title: str = "",
    cell_px: int = 160,
    title_colors: Sequence[str] = (),
    cols: int | None = None,
) -> Figure:
    """A grid of RGB images (H, W, 3 arrays, uint8 or float in [0, 1]) with a title each.

    The images are pasted into one montage (each letterboxed to `cell_px`) and drawn by one
    axes: a grid of subplots costs a second or more per figure, this a fraction of that.
    `cols`: images per row; None = a square-ish grid.
    """
    n = max(1, len(images))
    cols = min(n, cols or math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    band = 30 if titles else 4  # pixels above each cell for a two-line title
    pad = 10
    width, height = cols * (cell_px + pad) + pad, rows * (cell_px + band) + pad
    montage = np.full((height, width, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        tile = ImageOps.pad(Image.fromarray(_to_uint8(image)), (cell_px, cell_px), color="white")
        y, x = r * (cell_px + band) + band, c * (cell_px + pad) + pad
        montage[y : y + cell_px, x : x + cell_px] = np.asarray(tile.convert("RGB"))
    header = 28 if title else 0
    dpi = 100
    fig = Figure(figsize=(width / dpi, (height + header) / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + header)))
    ax.imshow(montage, interpolation="nearest")
    ax.set_axis_off()
    for i, text in enumerate(titles[: len(images)]):
        r, c = divmod(i, cols)
        x = c * (cell_px + pad) + pad + cell_px / 2
        y = r * (cell_px + band) + band - 5
        colour = title_colors[i] if i < len(title_colors) else "black"
        ax.text(x, y, text, ha="center", va="bottom", fontsize=7, linespacing=1.1, color=colour)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 4 / (height + header), va="top")
    return fig


def denormalize(
    batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> list[np.ndarray]:
    """Normalised image tensors (N, 3, H, W) back to displayable (H, W, 3) float arrays."""
    x = batch.detach().float().cpu()
    x = x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    return [img.permute(1, 2, 0).clamp(0, 1).numpy() for img in x]


def target_title(target: torch.Tensor, class_names: Sequence[str]) -> str:
    """A hard label's name, or a soft (mixed) target's two largest parts: `cat .70 + dog .30`."""
    if target.ndim == 0:
        return short(class_names[int(target)])
    weights, idx = target.float().topk(min(2, target.numel()))
    parts = [
        f"{short(class_names[int(i)])} {float(w):.2f}"
        for w, i in zip(weights, idx, strict=True)
        if w > 0.005
    ]
    return " + ".join(parts) if len(parts) > 1 else short(class_names[int(idx[0])])


# --------------------------------------------------------------------------- run dir
def write_run_plots(
    summary: Mapping[str, Any], plots_dir: str | Path, only: Collection[str] | None = None
) -> dict[str, Path]:
    """Draw a run's plots from its summary.json dict, as far as it has the data for them.

    Args:
        summary: the summary.json contents.
        plots_dir: where the PNGs go.
        only: draw only these of `curves` (curves.png), `confusion_matrix_val`
            (confusion_matrix.png), `confusion_matrix_test`, `class_counts`; None = all.

    Returns:
        {name: path} of the files written.
    """
    plots_dir = Path(plots_dir)
    written: dict[str, Path] = {}

    def wanted(name: str) -> bool:
        return only is None or name in only

    history = summary.get("history") or []
    if history and wanted("curves"):
        best = (summary.get("best") or {}).get("epoch")
        fig = curves_figure(history, summary.get("unfreeze_events") or [], best)
        written["curves"] = save_png(fig, plots_dir / "curves.png")
    names = summary.get("class_names") or []
    for stage, confusion in (summary.get("confusion_matrix") or {}).items():
        if not confusion or not names or not wanted(f"confusion_matrix_{stage}"):
            continue
        epoch = confusion.get("epoch")
        title = f"{stage} confusion matrix" + (f" (epoch {epoch})" if epoch is not None else "")
        fig = confusion_figure(confusion["matrix"], names, title)
        file = "confusion_matrix.png" if stage == "val" else f"confusion_matrix_{stage}.png"
        written[f"confusion_matrix_{stage}"] = save_png(fig, plots_dir / file)
    if summary.get("class_counts") and wanted("class_counts"):
        written["class_counts"] = save_png(
            class_counts_figure(summary["class_counts"]), plots_dir / "class_counts.png"
        )
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m thawkit.reporting.plots RUN_DIR`: redraw a run's plots from its summary.json."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("run_dir", type=Path, help="a run dir holding summary.json")
    args = parser.parse_args(argv)
    path = args.run_dir / "summary.json"
    if not path.is_file():
        raise SystemExit(
            f"{path} does not exist: pass a run dir (outputs/<date>/<time>-<strategy>)"
        )
    for name, file in write_run_plots(json.loads(path.read_text()), args.run_dir / "plots").items():
        print(f"{name}: {file}")


if __name__ == "__main__":
    main()
