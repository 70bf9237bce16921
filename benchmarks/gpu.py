"""GPU throughput: images/s of a bare PyTorch loop and of thawkit per strategy, and data waits.

    python benchmarks/gpu.py                                  # hymenoptera, Lite0, 224 px
    python benchmarks/gpu.py --strategies full two_phase --epochs 3 --batch-size 128

On a GPU it runs thawkit with `trainer=gpu` (bf16 autocast, channels_last, pinned memory,
non-blocking copies, workers sized to the host) and a bare loop with the same settings. For
each it prints training images/s and the share of the training time the device waits for data
(time the loop spends getting the next batch after the previous step finished on the device;
for thawkit this includes Lightning's work between steps). Without a GPU it runs the same on
the CPU (the test suite does, at a tiny size). One short script: the defaults take a few
minutes on one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]  # tests load this file by path
from common import scratch_dir  # noqa: E402

DEFAULT_DATA = os.environ.get("THAWKIT_BENCH_DATA", str(ROOT.parent / "shared/data/hymenoptera"))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="image folder with train/ and val/")
    p.add_argument("--strategies", nargs="+", default=["feature_extraction", "two_phase", "full"])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default="bundled")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    p.add_argument("--out", default=None, help="also write the results here (JSON)")
    return p.parse_args(argv)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _compose(args: argparse.Namespace, strategy: str, gpu: bool, out: str) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from thawkit import CONF_DIR

    overrides = [
        f"strategy={strategy}", f"data.root={os.path.abspath(args.data)}",
        f"data.image_size={args.size}", f"data.batch_size={args.batch_size}",
        f"model.backbone={args.backbone}", f"model.weights={args.weights}",
        f"trainer.max_epochs={args.epochs}", f"trainer={'gpu' if gpu else 'cpu'}",
        "callbacks.progress_bar=null", "trainer.enable_progress_bar=false", "~logger",
        "callbacks.views=null", f"paths.output_dir={out}",
    ]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return cfg


def bare_loop(args: argparse.Namespace, device: Any) -> dict[str, float]:
    """Full fine-tuning as a competent user writes it for a GPU, timed batch by batch."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision.transforms import v2 as T

    from thawkit.data.loaders import default_num_workers
    from thawkit.run.train import build

    gpu = device.type == "cuda"
    cfg = _compose(args, "full", gpu, scratch_dir("bench-gpu-bare-"))
    datamodule, model, _ = build(cfg)  # the same backbone and head as thawkit's
    pre = datamodule.preprocessing
    transform = T.Compose([
        T.RandomResizedCrop(args.size), T.RandomHorizontalFlip(), T.ToImage(),
        T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std),
    ])  # fmt: skip
    train = datasets.ImageFolder(os.path.join(args.data, "train"), transform)
    workers = default_num_workers(gpu)
    loader = DataLoader(train, args.batch_size, shuffle=True, num_workers=workers,
                        pin_memory=gpu, persistent_workers=workers > 0, drop_last=True)  # fmt: skip
    model = model.to(device, memory_format=torch.channels_last).train()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu)
    wait = compute = 0.0
    images = 0
    for _ in range(args.epochs):
        t = time.perf_counter()
        for x, y in loader:
            got = time.perf_counter()
            x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(device)
            done = time.perf_counter()
            wait, compute, images = wait + got - t, compute + done - got, images + len(x)
            t = done
    return {"images_per_s": images / (wait + compute), "data_wait": wait / (wait + compute),
            "workers": workers}  # fmt: skip


def thawkit_run(args: argparse.Namespace, strategy: str, device: Any) -> dict[str, float]:
    """thawkit as users run it, with a callback timing the gaps between training steps."""
    import lightning as L

    from thawkit.run.train import build

    class Waits(L.Callback):
        def __init__(self) -> None:
            self.wait = self.compute = 0.0
            self.images = 0
            self._t: float | None = None

        def on_train_epoch_start(self, *_: Any) -> None:
            self._t = time.perf_counter()

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, i: int) -> None:
            now = time.perf_counter()
            self.wait += now - (self._t or now)
            self._t = now
            self.images += len(batch[0])

        def on_train_batch_end(self, *_: Any) -> None:
            _sync(device)
            now = time.perf_counter()
            self.compute += now - (self._t or now)
            self._t = now

    cfg = _compose(args, strategy, device.type == "cuda", scratch_dir("bench-gpu-"))
    datamodule, model, trainer = build(cfg)
    waits = Waits()
    trainer.callbacks.append(waits)
    trainer.fit(model, datamodule=datamodule)
    total = waits.wait + waits.compute
    return {"images_per_s": waits.images / total, "data_wait": waits.wait / total,
            "workers": datamodule.num_workers}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse(argv)
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}: {args.backbone} at {args.size} px, batch {args.batch_size}, "
          f"{args.epochs} epochs, {args.data}")  # fmt: skip
    results = {"bare loop (full)": bare_loop(args, device)}
    for strategy in args.strategies:
        results[f"thawkit {strategy}"] = thawkit_run(args, strategy, device)
    print(f"| {'what':<30} | images/s | data wait | workers |\n|{'-' * 32}|---|---|---|")
    for what, r in results.items():
        print(f"| {what:<30} | {r['images_per_s']:8.1f} | {r['data_wait']:8.0%} | "
              f"{r['workers']} |")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({"device": name, **results}, indent=2))
    return results


if __name__ == "__main__":
    main()
