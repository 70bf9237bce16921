"""Fixed cost of a head-only epoch on cached features: thawkit beside a plain PyTorch loop.

    python benchmarks/epoch_overhead.py                       # 120 + 40 generated images, 12 epochs
    python benchmarks/epoch_overhead.py --data DIR --backbone efficientnet_lite0 --size 160

Runs `strategy=feature_extraction` with `augment=none` (one feature pass, then every epoch trains
the head on cached features, where the arithmetic takes milliseconds), once with the default
callbacks and once without the TensorBoard views (`callbacks.views=null`), and then, in the same
process, the loop a competent user writes for the same job: the same head on the same cached
feature tensors (read from thawkit's feature cache), AdamW with a per-step cosine LR, the same
batch size and epochs, a validation pass per epoch. Each time is the median from one epoch's
start to the next (train + validation + whatever runs between epochs), the first epoch (the
feature pass) left out. The overhead is thawkit's epoch minus the loop's; the target is at most
`TARGET_S` (docs/architecture.md, "Epochs on cached features"). thawkit runs with the default
`trainer.log_every_n_steps` (the tests' shrunk config logs every step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import scratch_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

TARGET_S = 0.1  # at most this many seconds per head-only epoch beyond the plain loop's


def _tensors(loader: Any, split: str) -> tuple[Any, Any]:
    """The cached (features, labels) that thawkit's switching loader serves for `split`."""
    features = loader.cache.features_loader(split, loader.loader)
    dataset = features.dataset
    dataset = getattr(dataset, "dataset", dataset)  # training: SeededSamples(TensorDataset)
    return dataset.tensors


def thawkit_epochs(data: Path, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """Seconds of every head-only epoch of a thawkit fit, and its cached features and head."""
    import lightning as L

    from conftest import tiny_cfg
    from thawkit.config.schema.training import TrainerSchema
    from thawkit.run.train import build

    overrides = [
        "strategy=feature_extraction", "augment=none", f"trainer.max_epochs={args.epochs}",
        f"model.backbone={args.backbone}", f"data.image_size={args.size}",
        f"data.batch_size={args.batch_size}", *extra,
    ]  # fmt: skip
    cfg = tiny_cfg(Path(scratch_dir("bench-epoch-")), overrides, data_root=data)
    cfg.trainer.log_every_n_steps = TrainerSchema.log_every_n_steps  # a user's default
    got: dict[str, Any] = {"starts": []}

    class Probe(L.Callback):
        def on_train_epoch_start(self, *_: object) -> None:
            got["starts"].append((time.perf_counter(), time.process_time()))

        def on_train_end(self, trainer: L.Trainer, *_: object) -> None:
            got["end"] = (time.perf_counter(), time.process_time())  # after the last validation
            got["train"] = _tensors(trainer.train_dataloader, "train")
            got["val"] = _tensors(trainer.val_dataloaders, "val")

    datamodule, model, trainer = build(cfg)
    trainer.callbacks.append(Probe())
    trainer.fit(model, datamodule=datamodule)
    got["epochs"] = _durations([*got["starts"], got["end"]])
    got["hparams"] = dict(model.hparams)
    return got


def loop_epochs(run: dict[str, Any], args: argparse.Namespace) -> list[tuple[float, float]]:
    """Seconds of every epoch of the plain loop on thawkit's cached features."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from thawkit.models.head import Head

    hp = run["hparams"]
    (x_train, y_train), (x_val, y_val) = run["train"], run["val"]
    head = Head(x_train.shape[1], hp["num_classes"], **hp["head"])
    optimizer = torch.optim.AdamW(head.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    train = DataLoader(TensorDataset(x_train, y_train), batch_size=args.batch_size, shuffle=True)
    val = DataLoader(TensorDataset(x_val, y_val), batch_size=args.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * len(train))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=hp["label_smoothing"])
    marks, history = [], []
    for _ in range(args.epochs):
        marks.append((time.perf_counter(), time.process_time()))
        head.train()
        for x, y in train:
            loss = loss_fn(head(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        head.eval()
        correct = total = 0
        val_loss = torch.zeros(())
        with torch.no_grad():
            for x, y in val:
                logits = head(x)
                val_loss += loss_fn(logits, y) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                total += len(y)
        history.append((float(val_loss / total), correct / total))  # what a user keeps
    marks.append((time.perf_counter(), time.process_time()))
    return _durations(marks)


def _durations(marks: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(wall, CPU) seconds between consecutive marks, the first epoch (feature pass) left out."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks[1:], marks[2:], strict=False)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="image folder (default: 120 + 40 generated images)")
    p.add_argument("--backbone", default="test_efficientnet")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--repeats", type=int, default=1, help="runs of each, medians over all epochs")
    args = p.parse_args()
    from conftest import make_image_folder

    data = Path(args.data) if args.data else make_image_folder(
        Path(scratch_dir("bench-epoch-data-")), (60, 60), ("train", "val"))  # fmt: skip
    load_start = os.getloadavg()
    runs: dict[str, list[tuple[float, float]]] = {"full": [], "bare": [], "loop": []}
    for _ in range(args.repeats):
        run = thawkit_epochs(data, args, [])
        runs["full"] += run["epochs"]
        runs["bare"] += thawkit_epochs(data, args, ["callbacks.views=null"])["epochs"]
        runs["loop"] += loop_epochs(run, args)
    load_end = os.getloadavg()
    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    overhead, cpu_overhead = wall["full"] - wall["loop"], cpu["full"] - cpu["loop"]
    n_train, n_val = len(run["train"][1]), len(run["val"][1])
    print(
        f"Head-only epochs: {args.backbone} at {args.size} px, {n_train} training and {n_val} "
        f"validation images, batch {args.batch_size}, {args.epochs} epochs x {args.repeats} "
        f"run(s); medians over the epochs after the first. Load average "
        f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end "
        f"({os.cpu_count()} cores)."
    )
    print()
    print("| what | wall s per head-only epoch (median) | CPU s (median) |")
    print("|---|---:|---:|")
    for key, what in (
        ("full", "thawkit, default callbacks"),
        ("bare", "thawkit, without the TensorBoard views"),
        ("loop", "plain PyTorch loop, same head and features"),
    ):
        print(f"| {what} | {wall[key]:.3f} | {cpu[key]:.3f} |")
    print(f"| **overhead** (thawkit - loop) | **{overhead:.3f}** | {cpu_overhead:.3f} |")
    verdict = "met" if overhead <= TARGET_S else "NOT met"
    print(
        f"\nTarget: overhead <= {TARGET_S} s of wall time per head-only epoch: **{verdict}** "
        f"({overhead:.3f} s, of which the views {wall['full'] - wall['bare']:.3f} s). CPU "
        "seconds are the process's own (a loaded machine stretches wall time, less so CPU time)."
    )


if __name__ == "__main__":
    main()
