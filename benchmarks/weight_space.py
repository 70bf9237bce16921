"""Benchmark: what WiSE-FT (`wiseft=true`) and model soups (`thawkit soup`) add on real photo sets.

    python benchmarks/weight_space.py                         # the full setting (below)
    nice -n 10 python benchmarks/weight_space.py --max-train 160 --epochs 3 --seeds 0 1

For every shared set (../shared/data/{hymenoptera,rsscn7,dtd10,brain_mri_tumor}) the script
makes one fixed split (seed 0): training images from the set's train/ (at most --max-train,
stratified), and the set's val/ halved, per class, into val/ (WiSE-FT's `a` and the greedy soup
are chosen on it) and test/ (held out: every number in the table is test accuracy). Each seed
is one `python train.py` run (bundled EfficientNet-Lite0, strategy=full, the default,
--size px, --epochs epochs, `wiseft=true`): its `wiseft` record gives the fine-tuned model's
test accuracy (a = 1) and the chosen mix's. Then `thawkit soup` mixes the seeds' runs of a set
(they share the start and the split) into the uniform and the greedy soup.

Printed (and written to --out as JSON and Markdown): per set, mean and spread (sample standard
deviation) over seeds of the fine-tuned and WiSE-FT test accuracy and their difference, the
chosen a's, and the soups against the best single run (by val). The machine's load (uptime)
at start and end is recorded with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# ../shared/data beside the checkout, or beside its parent (a git worktree sits one deeper).
_NEAR = [p / "shared" / "data" for p in (ROOT.parent, ROOT.parent.parent)]
DATA = Path(
    os.environ.get("THAWKIT_BENCH_DATA_DIR") or next((p for p in _NEAR if p.is_dir()), _NEAR[0])
)
SETS = ("hymenoptera", "rsscn7", "dtd10", "brain_mri_tumor")
IMAGES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGES and p.is_file())


def make_split(source: Path, dest: Path, max_train: int | None, seed: int = 0) -> dict[str, int]:
    """Link train/val/test class folders under `dest` (see the module docstring)."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
    train = {c: _files(source / "train" / c) for c in classes}
    total = sum(map(len, train.values()))
    counts = {"train": 0, "val": 0, "test": 0}
    for c in classes:
        keep = train[c]
        if max_train is not None and total > max_train:
            keep = rng.sample(keep, max(1, round(len(keep) * max_train / total)))
        held = _files(source / "val" / c)
        rng.shuffle(held)
        half = len(held) // 2
        for split, files in (("train", keep), ("val", held[:half]), ("test", held[half:])):
            folder = dest / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for f in files:
                link = folder / f.name
                if not link.exists():
                    link.symlink_to(f.resolve())
            counts[split] += len(files)
    return counts


def train_run(data: Path, run_dir: Path, seed: int, args: argparse.Namespace) -> dict:
    overrides = [
        f"data.root={data}", f"data.image_size={args.size}", f"data.batch_size={args.batch_size}",
        f"trainer.max_epochs={args.epochs}", f"seed={seed}", "wiseft=true",
        f"strategy={args.strategy}", "model.weights=bundled", f"trainer.accelerator={args.device}",
        "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}", *args.overrides,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "THAWKIT_OFFLINE": "1"}
    start = time.perf_counter()
    if (run_dir / "summary.json").is_file():  # --work-dir of an earlier call: reuse its run
        summary = json.loads((run_dir / "summary.json").read_text())
        if "wiseft" in summary:
            return _record(summary, seed, 0.0)
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"train.py failed in {run_dir}:\n{done.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return _record(summary, seed, time.perf_counter() - start)


def _record(summary: dict, seed: int, wall_s: float) -> dict:
    record = summary["wiseft"]
    return {
        "seed": seed,
        "wall_s": round(wall_s, 1),
        "finetuned": record["finetuned_test/acc"],
        "wiseft": record["test/acc"],
        "a": record["chosen"],
        "val_finetuned": record["finetuned_val/acc"],
        "val_wiseft": record["val/acc"],
    }


def soup_runs(sweep: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "THAWKIT_OFFLINE": "1"}
    device = "cpu" if args.device == "cpu" else "auto"
    done = subprocess.run(
        [sys.executable, "-m", "thawkit.cli", "soup", str(sweep), "--device", device],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"thawkit soup failed on {sweep}:\n{done.stderr[-3000:]}")
    return json.loads((sweep / "soup" / "soup.json").read_text())


def _ms(values: list[float]) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def table(results: dict) -> str:
    rows = [
        "| set | train / val / test | fine-tuned (a=1) | WiSE-FT | gain | a chosen "
        "| best single run | uniform soup | greedy soup (size) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["sets"].items():
        runs, soup = r["runs"], r["soup"]
        gains = [x["wiseft"] - x["finetuned"] for x in runs]
        sizes = "/".join(str(r["counts"][k]) for k in ("train", "val", "test"))
        chosen = ", ".join(f"{x['a']:g}" for x in runs)
        rows.append(
            f"| {name} | {sizes} | {_ms([x['finetuned'] for x in runs])} "
            f"| {_ms([x['wiseft'] for x in runs])} | {_ms(gains)} "
            f"| {chosen} "
            f"| {soup['best_single']['test/acc']:.3f} | {soup['uniform']['test/acc']:.3f} "
            f"| {soup['greedy']['test/acc']:.3f} ({len(soup['greedy']['ingredients'])}) |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(SETS))
    p.add_argument("--max-train", type=int, default=None, help="training images per set")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategy", default="full")
    p.add_argument("--device", default="cpu", help="trainer.accelerator (cpu, gpu, auto)")
    p.add_argument("--work", default=str(ROOT / "outputs" / "bench-weight-space"))
    p.add_argument("--work-dir", default=None, help="this exact folder; finished runs reused")
    p.add_argument("--out", default=None, help="write the results (JSON) and table (.md) here")
    p.add_argument("--overrides", nargs="*", default=[], help="more train.py overrides")
    args = p.parse_args()
    work = Path(args.work_dir or Path(args.work) / time.strftime("%Y%m%d-%H%M%S"))
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    results: dict = {"settings": vars(args), "load_start": uptime(), "sets": {}}
    for name in args.sets:
        data = work / "data" / name
        counts = make_split(DATA / name, data, args.max_train)
        runs = []
        for seed in args.seeds:
            runs.append(train_run(data, work / "runs" / name / f"seed{seed}", seed, args))
            print(name, runs[-1], flush=True)
        sweep = work / "runs" / name
        soup = (
            json.loads((sweep / "soup" / "soup.json").read_text())
            if (sweep / "soup" / "soup.json").is_file()
            else soup_runs(sweep, args)
            if len(runs) > 1
            else None
        )
        results["sets"][name] = {"counts": counts, "runs": runs, "soup": soup}
        print(name, "soup", {k: soup[k] for k in ("best_single", "uniform")}, flush=True)
    results["load_end"] = uptime()
    text = table(results)
    print(text)
    print(f"load: start {results['load_start']}\n      end   {results['load_end']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
        Path(args.out).with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
