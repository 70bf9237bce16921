"""Fixed cost of a head-only epoch on cached features: seconds per epoch, with and without views.

    python benchmarks/epoch_overhead.py                       # 120 generated images, 8 epochs
    python benchmarks/epoch_overhead.py --data DIR --backbone efficientnet_lite0 --size 160

Runs `strategy=feature_extraction` (no augmentation: one feature pass, then every epoch trains
the head on cached features, where the arithmetic takes milliseconds) and prints the median
time from one epoch's start to the next, once with the default callbacks and once without the
TensorBoard views (`callbacks.views=null`), so the difference is what the views cost per epoch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def epoch_seconds(data: Path, args: argparse.Namespace, extra: list[str]) -> float:
    import lightning as L

    from conftest import tiny_cfg
    from thawkit.run.train import build

    overrides = [
        "strategy=feature_extraction", "augment=none", f"trainer.max_epochs={args.epochs}",
        f"model.backbone={args.backbone}", f"data.image_size={args.size}", *extra,
    ]  # fmt: skip
    cfg = tiny_cfg(Path(tempfile.mkdtemp(prefix="bench-epoch-")), overrides, data_root=data)

    class Starts(L.Callback):
        def __init__(self) -> None:
            self.t: list[float] = []

        def on_train_epoch_start(self, *_: object) -> None:
            self.t.append(time.perf_counter())

    datamodule, model, trainer = build(cfg)
    starts = Starts()
    trainer.callbacks.append(starts)
    trainer.fit(model, datamodule=datamodule)
    # From the second epoch on: the first one runs the feature pass.
    return statistics.median(b - a for a, b in zip(starts.t[1:], starts.t[2:], strict=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="image folder (default: 120 generated images)")
    p.add_argument("--backbone", default="test_efficientnet")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=8)
    args = p.parse_args()
    from conftest import make_image_folder

    data = Path(args.data) if args.data else make_image_folder(
        Path(tempfile.mkdtemp(prefix="bench-epoch-data-")), (60, 60), ("train", "val"))  # fmt: skip
    full = epoch_seconds(data, args, [])
    bare = epoch_seconds(data, args, ["callbacks.views=null"])
    print(f"s per head-only epoch: {full:.3f} with the views, {bare:.3f} without "
          f"(views {full - bare:.3f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
