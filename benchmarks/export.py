"""int8 against fp32 on the shared photo sets: accuracy, size, latency (eager, ONNX fp32, int8).

    python benchmarks/export.py                       # every set, the issue's full setting
    nice -n 10 python benchmarks/export.py --size 128 --train-per-class 40 --val-per-class 20 \\
        --epochs 2 --sets hymenoptera rsscn7          # small, on a busy machine

For each set: a training run as users start it (`python train.py`, EfficientNet-Lite0 with its
bundled weights, `strategy=full`), on a seeded subsample of each class when asked, then
`python export.py ckpt=... quantize=int8 benchmark=true`; the table is read from the
`export.json` each export wrote, and goes into docs/benchmarks.md (section `export`) with the
machine's load. Targets: int8 accuracy within 1 point of fp32, int8 >= 1.5x the images/s of
ONNX fp32 at batch 32.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from run import write_doc  # noqa: E402

SETS = ("hymenoptera", "rsscn7", "dtd10", "brain_mri_tumor")


def shared_data() -> Path:
    for parent in ROOT.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    sys.exit("No shared/data folder above the checkout: pass --data-dir")


def subsample(src: Path, dst: Path, per_class: dict[str, int | None], seed: int) -> Path:
    """`dst/<split>/<class>/` of symlinks to a seeded draw of `per_class[split]` images."""
    rng = random.Random(seed)
    for split, n in per_class.items():
        for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            files = sorted(p for p in cls.iterdir() if p.is_file() and not p.name.startswith("."))
            chosen = files if n is None or n >= len(files) else rng.sample(files, n)
            out = dst / split / cls.name
            out.mkdir(parents=True, exist_ok=True)
            for f in chosen:
                (out / f.name).symlink_to(f.resolve())
    return dst


def _run(script: str, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), THAWKIT_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        sys.exit(f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def one_set(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    data = subsample(
        args.data_dir / name, tmp / name / "data",
        {"train": args.train_per_class, "val": args.val_per_class}, args.seed,
    )  # fmt: skip
    run_dir = tmp / name / "run"
    _run(
        "train.py", f"data.root={data}", f"data.image_size={args.size}",
        f"trainer.max_epochs={args.epochs}", "strategy=full", "model.weights=bundled",
        "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
        f"seed={args.seed}", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    _run(
        "export.py", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "quantize=int8",
        "benchmark=true", f"calibration_images={args.calibration_images}",
        f"bench_runs={args.runs}", *([f"bench_threads={args.threads}"] if args.threads else []),
    )  # fmt: skip
    return json.loads((run_dir / "export" / "export.json").read_text())


def row(name: str, record: dict) -> str:
    q = record["int8"]
    lat = {(r["runtime"], r["batch"]): r for r in record["benchmark"]["rows"]}
    runtimes = ("pytorch_eager", "onnx_fp32", "onnx_int8")
    ms = [lat[(rt, b)]["median_ms"] for b in (1, 32) for rt in runtimes]
    speedup = lat[("onnx_int8", 32)]["images_per_s"] / lat[("onnx_fp32", 32)]["images_per_s"]
    return (
        f"| {name} | {q['eval_images']} | {q['accuracy_fp32']:.4f} | {q['accuracy_int8']:.4f} | "
        f"{100 * q['accuracy_drop']:+.1f} | {record['size_bytes'] / 1e6:.1f} / "
        f"{q['size_bytes'] / 1e6:.1f} | " + " | ".join(f"{m:.1f}" for m in ms)
        + f" | {speedup:.2f}x |"
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train-per-class", type=int, default=None, help="default: every image")
    p.add_argument("--val-per-class", type=int, default=None, help="default: every image")
    p.add_argument("--calibration-images", type=int, default=200)
    p.add_argument("--runs", type=int, default=20, help="timed runs per latency cell")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    args = p.parse_args()
    args.data_dir = args.data_dir or shared_data()
    load_before, start = os.getloadavg(), time.perf_counter()
    rows, threads = [], None
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for name in args.sets:
            record = one_set(name, args, Path(tmp))
            threads = record["benchmark"]["threads"]
            rows.append(row(name, record))
            print(rows[-1], flush=True)
    load_after = os.getloadavg()
    body = "\n".join([
        f"`python benchmarks/export.py {' '.join(sys.argv[1:])}` (EfficientNet-Lite0, bundled "
        f"weights, strategy=full, {args.size} px, {args.epochs} epochs, train/val images per "
        f"class {args.train_per_class or 'all'}/{args.val_per_class or 'all'}, int8 static "
        f"QDQ calibrated on up to {args.calibration_images} training images; latency: median of "
        f"{args.runs} runs, {threads} threads; load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after, {time.perf_counter() - start:.0f} s):",
        "",
        "| set | val images | acc fp32 | acc int8 | drop (points) | MB fp32 / int8 | "
        "b1 eager ms | b1 fp32 ms | b1 int8 ms | b32 eager ms | b32 fp32 ms | b32 int8 ms | "
        "int8 / fp32 images/s at b32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    write_doc(Path(args.doc), body, "export")
    print(body)


if __name__ == "__main__":
    main()
