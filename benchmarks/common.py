"""Shared by the benchmark variants: the schedule of each strategy, the result record, timing."""

from __future__ import annotations

import atexit
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Each variant runs from the repository root as `python benchmarks/<variant>.py`.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

STRATEGIES = ("feature_extraction", "two_phase", "gradual")
# The project's shared data sits next to the repository (../shared/data/hymenoptera).
DEFAULT_DATA = os.environ.get("THAWKIT_BENCH_DATA", str(ROOT.parent / "shared/data/hymenoptera"))


def scratch_dir(prefix: str) -> str:
    """A temporary folder for a run's outputs, removed when the benchmark exits: a sweep of
    benchmark runs left ~50 MB of checkpoints each in /tmp."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def trainable_groups(strategy: str, epoch: int, num_groups: int) -> int:
    """Backbone groups (from the top) that train in `epoch`, as thawkit's strategy configs do.

    feature_extraction: none. two_phase: none for 2 epochs, then all. gradual: one more group
    every epoch, starting with none.
    """
    if strategy == "feature_extraction":
        return 0
    if strategy == "two_phase":
        return 0 if epoch < 2 else num_groups
    if strategy == "gradual":
        return min(epoch, num_groups)
    raise ValueError(f"unknown strategy {strategy!r}; one of {STRATEGIES}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB); DataLoader workers share most of it."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Result:
    """What every variant reports (one JSON file per run)."""

    framework: str
    strategy: str
    seed: int
    epochs: int
    image_size: int
    wall_s: float = 0.0  # data setup + training + validation, imports excluded
    train_images: int = 0
    train_time_s: float = 0.0  # time in training epochs (validation excluded)
    backbone_train_images: int = 0  # images in epochs where backbone groups train
    backbone_train_time_s: float = 0.0
    backbone_step_time_s: float = 0.0  # the steps alone (forward, backward, update; no loading)
    val_acc: float = 0.0  # after the last epoch
    best_val_acc: float = 0.0
    peak_rss_mb: float = 0.0
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    history: list[dict] = field(default_factory=list)
    # thawkit's set-up from its own records: scan_s, decode_s, features_s (the feature-cache
    # passes, which run inside the first epoch and validation), image_cache_mb, features_mb.
    setup: dict = field(default_factory=dict)

    def finish(self, start: float, out: str | None) -> None:
        self.wall_s = time.perf_counter() - start
        self.peak_rss_mb = peak_rss_mb()
        usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        self.cpu_user_s = sum(u.ru_utime for u in usage)
        self.cpu_sys_s = sum(u.ru_stime for u in usage)
        accs = [h["val_acc"] for h in self.history]
        self.val_acc = accs[-1] if accs else 0.0
        self.best_val_acc = max(accs) if accs else 0.0
        text = json.dumps(asdict(self), indent=2)
        if out:
            Path(out).write_text(text)
        else:
            print(text)


def base_args(description: str, strategies: tuple[str, ...] = STRATEGIES):
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("strategy", choices=strategies)
    p.add_argument("--data", default=DEFAULT_DATA, help="image folder with train/ and val/")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the JSON result here")
    return p


def epoch_timer(result: Result, groups_of_epoch):
    """A Lightning callback that fills `result` (train time per epoch, val acc per epoch).

    `groups_of_epoch(trainer, module)` says how many backbone groups train in the epoch.
    """
    import lightning as L

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()
            self.n = 0
            self.steps_s = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.t_step = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.steps_s += time.perf_counter() - self.t_step
            self.n += len(batch[1])

        def on_validation_start(self, trainer, pl_module):
            if trainer.sanity_checking or not hasattr(self, "t0"):
                return
            self.train_s = time.perf_counter() - self.t0

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            k = groups_of_epoch(trainer, pl_module)
            result.train_images += self.n
            result.train_time_s += self.train_s
            if k > 0:
                result.backbone_train_images += self.n
                result.backbone_train_time_s += self.train_s
                result.backbone_step_time_s += self.steps_s
            acc = trainer.callback_metrics.get("val/acc", trainer.callback_metrics.get("val_acc"))
            result.history.append({
                "epoch": trainer.current_epoch, "trainable_groups": k,
                "train_time_s": round(self.train_s, 3), "val_acc": float(acc),
            })  # fmt: skip

    return EpochTimer()
