"""Benchmark: how thawkit's cost and memory grow with the folder (400 to 25,600 training images).

    python benchmarks/scale.py                                   # the issue's full setting
    python benchmarks/scale.py --sizes 400 1600 --strategies feature_extraction --epochs 1

Builds folders of hard-linked copies of the shared photos (../shared/data: hymenoptera, rsscn7,
dtd10, brain_mri_tumor; cycled through, every copy under a file name of its own, one class folder
per source class, a val split of 20% of all images), and runs thawkit on each (benchmarks/
thawkit_run.py, a process per run, each with an empty persistent cache: every run starts cold).
Reported per strategy and size: the set-up from the run's own records (the bad-image scan, the
decode into the image cache, the feature-cache passes), the wall (set-up + training + validation,
imports excluded) per 1,000 training images, the training epoch per 1,000 images (the
feature-cache pass that runs inside the first epoch taken out), and the peak RSS of the run's
process tree. Targets: seconds per image flat within 20% across sizes, set-up included; peak
memory within the configured budgets (what the caches hold stays under `image_cache_mb` and
`feature_cache_mb`, and the peak RSS grows from the smallest size by no more than the two).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from run import run_json, write_doc  # noqa: E402

SIZES = (400, 1600, 6400, 25600)
STRATEGIES = ("feature_extraction", "full")
SOURCES = ("hymenoptera", "rsscn7", "dtd10", "brain_mri_tumor")
SHARED_DATA = ROOT.parent / "shared" / "data"
FLAT = 1.2  # the slowest size's seconds per image against the fastest's
VAL_SHARE = 0.2  # of all images


# ----------------------------------------------------------------- the folders
def source_images(data: Path, split: str) -> list[tuple[str, Path]]:
    """(class, file) of every image in `split` of every source, classes named `<source>-<class>`."""
    from thawkit.data.folder import image_files

    found = []
    for source in SOURCES:
        for class_dir in sorted(p for p in (data / source / split).iterdir() if p.is_dir()):
            found += [(f"{source}-{class_dir.name}", f) for f in image_files(class_dir)]
    if not found:
        raise SystemExit(f"no {split} images under {data}/{{{','.join(SOURCES)}}}")
    return found


def build_folder(data: Path, out: Path, train_images: int) -> Path:
    """`out/train` with `train_images` hard links cycling through the sources' training images,
    `out/val` with val images likewise (20% of all); every link has a file name of its own."""
    val_images = round(train_images * VAL_SHARE / (1 - VAL_SHARE))
    for split, n in (("train", train_images), ("val", val_images)):
        sources = itertools.cycle(source_images(data, split))
        for i, (label, src) in zip(range(n), sources, strict=False):
            dst = out / split / label / f"{i:06d}-{src.name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dst)
    return out


# ----------------------------------------------------------------- the table
def row(record: dict) -> dict:
    """The figures of one run (a benchmarks/thawkit_run.py record with run.py's additions)."""
    setup = record["setup"]
    n, epochs = record["train_size"], record["epochs"]
    # The feature-cache pass over the training split runs inside the first training epoch.
    inside = sum(e["s"] for e in setup["extractions"] if e["split"] == "train")
    setup_s = setup["scan_s"] + setup["decode_s"] + setup["features_s"]
    epochs_s = record["train_time_s"] - inside
    return {
        "strategy": record["strategy"],
        "train_images": n,
        "scan_s": setup["scan_s"],
        "decode_s": setup["decode_s"],
        "features_s": setup["features_s"],
        "setup_s": setup_s,
        "wall_s": record["wall_s"],
        # What grows with the folder: the set-up and the training epochs.
        "s_per_1000": 1000 * (setup_s + epochs_s) / n,
        # The rest: building the model, the validation loops (on images for `full`), the
        # checkpoints, and the reports after fit, which run the model over the val split.
        "other_s": record["wall_s"] - setup_s - epochs_s,
        "wall_s_per_1000": 1000 * record["wall_s"] / n,
        "epoch_s_per_1000": 1000 * epochs_s / epochs / n,
        "peak_rss_mb": max(record["peak_rss_mb"], record.get("process_peak_rss_mb", 0.0)),
        "image_cache_mb": setup["image_cache_mb"],
        "features_mb": setup["features_mb"],
        "image_budget_mb": setup["image_budget_mb"],
        "feature_budget_mb": setup["feature_budget_mb"],
        "val_acc": record["val_acc"],
    }


def _verdict(ok: bool) -> str:
    return f"**{'met' if ok else 'NOT met'}**"


def scale_table(records: list[dict]) -> list[str]:
    """Markdown lines: a table per strategy, then the two targets per strategy."""
    rows = [row(r) for r in records]
    lines: list[str] = []
    targets = ["### Targets", ""]
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        mine = [r for r in rows if r["strategy"] == strategy]
        mine.sort(key=lambda r: r["train_images"])
        lines += [
            f"### {strategy}",
            "",
            "| train images | set-up s (scan + decode + features) | epoch s per 1,000 images | "
            "s per 1,000 images (set-up + epochs) | wall s (other s) | wall s per 1,000 images | "
            "peak RSS MB | image cache MB | features in memory MB | val acc |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in mine:
            lines.append(
                f"| {r['train_images']:,} | {r['setup_s']:.1f} ({r['scan_s']:.1f} + "
                f"{r['decode_s']:.1f} + {r['features_s']:.1f}) | {r['epoch_s_per_1000']:.2f} | "
                f"{r['s_per_1000']:.2f} | {r['wall_s']:.1f} ({r['other_s']:.1f}) | "
                f"{r['wall_s_per_1000']:.2f} | {r['peak_rss_mb']:.0f} | "
                f"{r['image_cache_mb']:.0f} | {r['features_mb']:.0f} | {r['val_acc']:.3f} |"
            )
        lines.append("")
        per_image = [r["s_per_1000"] for r in mine]
        spread = max(per_image) / min(per_image)
        sizes = ", ".join(f"{r['train_images']:,}" for r in mine)
        targets.append(
            f"- {strategy}: seconds per image flat within {100 * (FLAT - 1):.0f}% across "
            f"{sizes} images (set-up included): "
            f"{min(per_image):.2f} to {max(per_image):.2f} s of set-up and epochs per 1,000 "
            f"({100 * (spread - 1):+.0f}%): {_verdict(spread <= FLAT)}"
        )
        walls = [r["wall_s_per_1000"] for r in mine]
        wall_spread = max(walls) / min(walls)
        targets.append(
            f"- {strategy}, the same for the whole run (the rest: model build, validation, "
            f"checkpoints, reports after fit; {min(r['other_s'] for r in mine):.0f} to "
            f"{max(r['other_s'] for r in mine):.0f} s): "
            f"{min(walls):.2f} to {max(walls):.2f} s per 1,000 "
            f"({100 * (wall_spread - 1):+.0f}%): {_verdict(wall_spread <= FLAT)}"
        )
        base = mine[0]
        growth = max(r["peak_rss_mb"] for r in mine) - base["peak_rss_mb"]
        budget = base["image_budget_mb"] + base["feature_budget_mb"]
        within = all(
            r["image_cache_mb"] <= r["image_budget_mb"]
            and r["features_mb"] <= r["feature_budget_mb"]
            for r in mine
        )
        targets.append(
            f"- {strategy}: peak memory within the budgets (image_cache_mb="
            f"{base['image_budget_mb']:g}, feature_cache_mb={base['feature_budget_mb']:g}): "
            f"caches at most {max(r['image_cache_mb'] for r in mine):.0f} and "
            f"{max(r['features_mb'] for r in mine):.0f} MB, peak RSS "
            f"{base['peak_rss_mb']:.0f} to {max(r['peak_rss_mb'] for r in mine):.0f} MB "
            f"(+{growth:.0f} MB against +{budget:g} allowed): "
            f"{_verdict(within and growth <= budget)}"
        )
    return [*lines, *targets, ""]


# ----------------------------------------------------------------- the runs
def run_one(strategy: str, folder: Path, n: int, args: argparse.Namespace, work: Path) -> dict:
    out = work / f"{strategy}-{n}.json"
    overrides = [f"callbacks.speed.{k}={v}" for k, v in (
        ("image_cache_mb", args.image_cache_mb), ("feature_cache_mb", args.feature_cache_mb),
    ) if v is not None]  # fmt: skip
    cmd = [
        sys.executable, str(HERE / "thawkit_run.py"), strategy, "--data", str(folder),
        "--epochs", str(args.epochs), "--size", str(args.size),
        "--batch-size", str(args.batch_size), "--out", str(out),
        *(["--overrides", *overrides] if overrides else []),
    ]  # fmt: skip
    cold = work / f"cache-{strategy}-{n}"  # an empty persistent cache: the run starts cold
    record = run_json(cmd, out, f"thawkit {strategy} at {n} images", THAWKIT_CACHE=str(cold))
    shutil.rmtree(cold, ignore_errors=True)
    record["train_size"] = n
    r = row(record)
    print(
        f"  {strategy:18s} {n:>6,} images: set-up {r['setup_s']:6.1f} s, wall {r['wall_s']:7.1f} s "
        f"({r['s_per_1000']:.2f} s per 1,000), epoch {r['epoch_s_per_1000']:.2f} s per 1,000, "
        f"peak RSS {r['peak_rss_mb']:.0f} MB, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--size", type=int, default=64, help="image size in pixels")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data", default=str(SHARED_DATA), help=f"holds {', '.join(SOURCES)}")
    p.add_argument("--work", default=None, help="where the folders are built (default: a temp dir)")
    p.add_argument("--image-cache-mb", type=float, default=None, help="default: the config's")
    p.add_argument("--feature-cache-mb", type=float, default=None, help="default: the config's")
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--section", default="scale", help="the <!-- SECTION:start/end --> block")
    p.add_argument("--json", default=None, help="also write every run's record here")
    args = p.parse_args()
    import json
    import tempfile

    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    print(f"Load average at start: {_load(load_before)}", flush=True)
    t0 = time.perf_counter()
    work = Path(args.work or tempfile.mkdtemp(prefix="thawkit-scale-"))
    planned = len(args.sizes) * len(args.strategies)
    records: list[dict] = []

    def write(load_after: tuple[float, ...], final: bool) -> str:
        """The section of the doc (rewritten after every run, so a cut-short run leaves its
        table)."""
        command = shlex.join(["python", "benchmarks/scale.py", *sys.argv[1:]])
        done = "" if final else f" Cut short or still running: {len(records)} of {planned} runs."
        body = [
            f"Run {started}, `{command}`: EfficientNet-Lite0 (bundled weights) at {args.size} "
            f"px, {args.epochs} epoch(s), batch size {args.batch_size}, every run cold (empty "
            f"persistent cache). Machine: {os.cpu_count()} CPU cores, no GPU; load average "
            f"(1, 5, 15 min) {_load(load_before)} at start and {_load(load_after)} at "
            f"{'end' if final else 'the last run'} (the benchmark's own runs included). "
            f"Whole benchmark: {(time.perf_counter() - t0) / 60:.1f} min.{done}",
            "",
            *scale_table(records),
        ]
        text = "\n".join(body)
        write_doc(Path(args.doc), text, args.section)
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=2))
        return text

    try:
        for n in sorted(args.sizes):
            folder = build_folder(Path(args.data), work / f"folder-{n}", n)
            for strategy in args.strategies:
                records.append(run_one(strategy, folder, n, args, work))
                write(os.getloadavg(), final=False)
            shutil.rmtree(folder)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"Load average at end: {_load(load_after)}", flush=True)
    print("\n" + write(load_after, final=True))
    print(f"Wrote {args.doc}")


def _load(load: tuple[float, ...]) -> str:
    return ", ".join(f"{x:.1f}" for x in load)


if __name__ == "__main__":
    main()
