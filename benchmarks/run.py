"""Benchmark: the textbook PyTorch loop, Lightning's BackboneFinetuning and thawkit, side by side.

    python benchmarks/run.py                      # defaults below, writes docs/benchmarks.md
    python benchmarks/run.py --repeats 3 --size 224 --epochs 5

Every run is its own subprocess (same data, backbone, epochs, batch size), started one after the
other, repeats interleaved so that load drifting on a shared machine spreads over all variants.
Reported per strategy: wall time (data setup + training + validation, imports excluded), training
images/s, peak RSS of the training process, val accuracy after the last epoch, and each one's
ratio to the reference loop; medians over repeats (seeds 0, 1, ...).

Then the honest reference, side by side in whole-process walls (interpreter start and imports
included): the floor (benchmarks/floor.py: every image decoded once, one frozen forward pass),
the tutorial loop as written (num_workers=4), the same loop with its workers matched to the
cores, and thawkit, with the targets: feature_extraction within 1.1x the floor, two_phase at
most 0.6x the matched loop at equal or better val accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import DEFAULT_DATA, STRATEGIES  # noqa: E402
from reference_table import reference_section  # noqa: E402

# The loader workers a competent user gives the loop: the cores but one (the training process
# keeps one), at most the tutorial's 4.
MATCHED_WORKERS = max(1, min(4, (os.cpu_count() or 2) - 1))

# name -> (script, extra arguments)
VARIANTS = {
    "reference": ("reference_loop.py", []),
    "reference, workers matched": (
        "reference_loop.py",
        ["--name", "reference, workers matched", "--workers", str(MATCHED_WORKERS)]
        + ["--persistent-workers", "--pin-memory"],
    ),
    "lightning": ("lightning_finetuning.py", []),
    "thawkit": ("thawkit_run.py", []),
    "thawkit, caches off": (
        "thawkit_run.py",
        ["--name", "thawkit, caches off", "--overrides", "speed=off"],
    ),
}


def run_json(cmd: list[str], out: Path, what: str, **env: str) -> dict:
    """Run a benchmark script in its own process; its JSON result, with the process's wall
    time measured from outside (imports included) and the peak RSS of its process tree (the
    largest of the process and its DataLoader workers, from `wait4`)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **env)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here: its rusage is this run's alone
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"{what} failed:\n{stderr.read().decode(errors='replace')[-3000:]}")
    result = json.loads(out.read_text())
    result["process_wall_s"] = time.perf_counter() - t0
    result["process_peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def run_one(variant: str, strategy: str, seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    script, extra = VARIANTS[variant]
    out = tmp / f"{variant.replace(', ', '_').replace(' ', '_')}-{strategy}-{seed}.json"
    cmd = [
        sys.executable, str(HERE / script), strategy, "--data", args.data,
        "--epochs", str(args.epochs), "--size", str(args.size),
        "--batch-size", str(args.batch_size), "--seed", str(seed), "--out", str(out), *extra,
    ]  # fmt: skip
    # Every run starts cold: its own empty persistent cache (thawkit.data.disk_cache), so a
    # repeat never reads back the set-up of the run before it.
    cold = tmp / f"cache-{out.stem}"
    result = run_json(cmd, out, f"{variant} {strategy}", THAWKIT_CACHE=str(cold))
    print(
        f"  {variant:22s} {strategy:18s} seed {seed}: wall {result['wall_s']:6.1f} s, "
        f"val acc {result['val_acc']:.3f}, peak RSS {result['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    return result


def run_floor(seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    """benchmarks/floor.py in its own process, timed from outside (imports included)."""
    out = tmp / f"floor-{seed}.json"
    cmd = [
        sys.executable, str(HERE / "floor.py"), "--data", args.data, "--size", str(args.size),
        "--batch-size", str(args.floor_batch_size), "--out", str(out),
    ]  # fmt: skip
    result = run_json(cmd, out, "floor")
    print(
        f"  {'floor':22s} {'-':18s} seed {seed}: process wall {result['process_wall_s']:6.1f} s, "
        f"forward {result['forward_images_per_s']:.1f} images/s ({result['images']} images)",
        flush=True,
    )
    return result


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def summarise(rows: list[dict]) -> dict:
    imgs = median(rows, "train_images")
    bb_time = [r["backbone_train_time_s"] for r in rows]
    return {
        "wall_s": median(rows, "wall_s"),
        "process_wall_s": median(rows, "process_wall_s"),
        "images_per_s": statistics.median(r["train_images"] / r["wall_s"] for r in rows),
        "train_images": imgs,
        "backbone_images_per_s": statistics.median(
            r["backbone_train_images"] / r["backbone_train_time_s"] for r in rows
        )
        if all(bb_time)
        else None,
        "step_images_per_s": statistics.median(
            r["backbone_train_images"] / r["backbone_step_time_s"] for r in rows
        )
        if all(bb_time)
        else None,
        "peak_rss_mb": median(rows, "peak_rss_mb"),
        "val_acc": median(rows, "val_acc"),
        "best_val_acc": median(rows, "best_val_acc"),
        "cpu_s": statistics.median(r["cpu_user_s"] + r["cpu_sys_s"] for r in rows),
        "sys_share": statistics.median(
            r["cpu_sys_s"] / max(1e-9, r["cpu_user_s"] + r["cpu_sys_s"]) for r in rows
        ),
        "accs": [round(r["val_acc"], 3) for r in rows],
    }


def table(strategy: str, stats: dict[str, dict]) -> list[str]:
    ref = stats["reference"]
    lines = [
        f"### {strategy}",
        "",
        "| variant | wall s | x faster | images/s | peak RSS MB | RSS vs ref | val acc "
        "(runs) | backbone epochs: images/s (steps only) | CPU s (sys %) |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, s in stats.items():
        bb = (
            f"{s['backbone_images_per_s']:.1f} ({s['step_images_per_s']:.1f})"
            if s["backbone_images_per_s"]
            else "-"
        )
        lines.append(
            f"| {name} | {s['wall_s']:.1f} | {ref['wall_s'] / s['wall_s']:.2f} | "
            f"{s['images_per_s']:.1f} | {s['peak_rss_mb']:.0f} | "
            f"{s['peak_rss_mb'] / ref['peak_rss_mb']:.2f} | {s['val_acc']:.3f} "
            f"({', '.join(f'{a:.3f}' for a in s['accs'])}) | {bb} | "
            f"{s['cpu_s']:.0f} ({100 * s['sys_share']:.0f}%) |"
        )
    return [*lines, ""]


def verdicts(all_stats: dict[str, dict[str, dict]]) -> list[str]:
    lines = ["### Targets", ""]
    fe = all_stats.get("feature_extraction")
    if fe:
        ref, tk = fe["reference"], fe["thawkit"]
        speed = ref["wall_s"] / tk["wall_s"]
        ok = speed >= 5 and tk["val_acc"] >= ref["val_acc"]
        lines.append(
            f"- feature_extraction >= 5x faster at equal or better val accuracy: "
            f"{speed:.1f}x, val acc {tk['val_acc']:.3f} vs {ref['val_acc']:.3f}: "
            f"**{'met' if ok else 'NOT met'}**"
        )
    for strategy in ("two_phase", "gradual"):
        st = all_stats.get(strategy)
        if not st:
            continue
        ref, tk = st["reference"], st["thawkit"]
        lines.append(
            f"- {strategy}: total time <= the reference loop's (caches on): "
            f"{tk['wall_s']:.1f} s vs {ref['wall_s']:.1f} s: "
            f"**{'met' if tk['wall_s'] <= ref['wall_s'] else 'NOT met'}**"
        )
        off = st.get("thawkit, caches off")
        if off and off["step_images_per_s"] and ref["step_images_per_s"]:
            ratio = off["step_images_per_s"] / ref["step_images_per_s"]
            epochs = off["backbone_images_per_s"] / ref["backbone_images_per_s"]
            lines.append(
                f"- {strategy}: per-step training throughput with caches off within 5% of the "
                f"bare loop (steps of the epochs where the backbone trains): "
                f"{off['step_images_per_s']:.1f} vs {ref['step_images_per_s']:.1f} images/s "
                f"({100 * (ratio - 1):+.0f}%; whole epochs, data loading included: "
                f"{100 * (epochs - 1):+.0f}%): **{'met' if ratio >= 0.95 else 'NOT met'}**"
            )
    fe_rss = fe["thawkit"]["peak_rss_mb"] if fe else None
    full = [all_stats[s]["thawkit"]["peak_rss_mb"] for s in ("two_phase",) if s in all_stats]
    if fe_rss and full:
        lines.append(
            f"- peak memory, feature_extraction vs two_phase (whose last epochs train every "
            f"layer): {fe_rss:.0f} MB vs {full[0]:.0f} MB ({fe_rss / full[0]:.2f}x)"
        )
    return [*lines, ""]


def write_doc(path: Path, body: str, section: str = "results") -> None:
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start}\n{body}\n{end}"
    if path.is_file() and start in path.read_text():
        text = path.read_text()
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        path.write_text(before + block + after)
    elif path.is_file():
        path.write_text(path.read_text().rstrip() + f"\n\n{block}\n")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Benchmarks\n\n{block}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the floor process (benchmarks/floor.py) once per repeat",
    )
    p.add_argument("--floor-batch-size", type=int, default=64)
    p.add_argument("--json", default=None, help="also write every run's record here")
    p.add_argument(
        "--section", default="results", help="the <!-- SECTION:start/end --> block to rewrite"
    )
    args = p.parse_args()
    if not (Path(args.data) / "train").is_dir():
        sys.exit(f"--data {args.data}: no train/ folder there. Point --data at hymenoptera.")
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M")
    t0 = time.perf_counter()
    runs: list[dict] = []
    floors: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="thawkit-bench-") as tmp:
        for seed in range(args.repeats):
            if args.floor:
                floors.append(run_floor(seed, args, Path(tmp)))
            for strategy in args.strategies:
                for variant in args.variants:
                    if variant == "thawkit, caches off" and strategy == "feature_extraction":
                        continue  # the throughput target concerns two_phase and gradual
                    runs.append(run_one(variant, strategy, seed, args, Path(tmp)))
                    runs[-1]["variant"] = variant
    total = time.perf_counter() - t0
    load_after = os.getloadavg()
    all_stats: dict[str, dict[str, dict]] = {}
    body = [
        f"Run {started}, `{shlex.join(['python', 'benchmarks/run.py', *sys.argv[1:]])}`: "
        f"{args.data}, EfficientNet-Lite0 (bundled weights) at {args.size} px, {args.epochs} "
        f"epochs, batch size {args.batch_size}, {args.repeats} repeat(s) (seeds 0..), medians. "
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"no GPU; load average {load_before[0]:.1f} before and {load_after[0]:.1f} after "
        f"(the benchmark's own processes included). Whole benchmark: {total / 60:.1f} min.",
        "",
    ]
    for strategy in args.strategies:
        stats = {}
        for variant in args.variants:
            rows = [r for r in runs if r["variant"] == variant and r["strategy"] == strategy]
            if rows:
                stats[variant] = summarise(rows)
        all_stats[strategy] = stats
        body += table(strategy, stats)
    body += verdicts(all_stats)
    body += reference_section(floors, all_stats, MATCHED_WORKERS)
    text = "\n".join(body)
    print("\n" + text)
    write_doc(Path(args.doc), text, args.section)
    if args.json:
        floor_rows = [dict(r, variant="floor") for r in floors]
        Path(args.json).write_text(json.dumps(runs + floor_rows, indent=2))
    print(f"Wrote {args.doc}")


if __name__ == "__main__":
    main()
