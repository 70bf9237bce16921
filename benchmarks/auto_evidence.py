"""Evidence for `strategy=auto`: compare_strategies at equal epochs on every shared dataset.

    python benchmarks/auto_evidence.py                       # the full setting (below)
    nice -n 10 python benchmarks/auto_evidence.py --size 96 --max-train 150 --epochs 3 \
        --seeds 0 1 --sets hymenoptera digits               # a small run on a busy machine

For each dataset, `python train.py -m experiment=compare_strategies` runs every fixed strategy
and `auto` for the same `trainer.max_epochs` (given on the command line, so auto plans within
it), the same seeds and image size. Per dataset it prints auto's pick(s), the best fixed
strategy, the default (`strategy=full`, train.yaml's), their best val accuracy (mean and spread
over seeds, of the run's model: the best checkpoint, or WiSE-FT's mix), and whether auto is
within `--tolerance` of the best fixed strategy and not below the default. The table goes into
docs/strategies.md between `<!-- auto-evidence:start -->` and `<!-- auto-evidence:end -->`.

`--max-train`/`--max-val` subsample each split (an even share per class, fixed seed) into
symlink folders, for small runs on small machines. Runs already present under `--out` are
reused (a second call runs only the missing strategy-seed pairs; a pair found twice counts once).
A finished run's checkpoints are removed once its sweep ends (the table reads summary.json only;
five sets x seven strategies x five seeds kept ~35 GB of them); `--keep-checkpoints` keeps them.

`--own-epochs` adds auto at its own epochs: auto runs without `trainer.max_epochs` (it picks
them, as `python train.py strategy=auto` does), and the comparison stays at equal epochs: the
fixed strategies of `--own-epochs-strategies` (`best` = the best fixed strategy at `--epochs` on
that set) run for the epochs auto picked (the largest over seeds), early stopping off for all as
in compare_strategies. Those runs land in the `<set>-<E>ep` folder, where a later `--epochs E`
call finds and reuses them.
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
# The project's shared data sits next to the repository (../shared/data), or next to its parent
# folder (a git worktree lives one level deeper).
_NEAR = [p / "shared" / "data" for p in (ROOT.parent, ROOT.parent.parent)]
SHARED = Path(
    os.environ.get("THAWKIT_SHARED_DATA", str(next((p for p in _NEAR if p.is_dir()), _NEAR[0])))
)
SETS = ("hymenoptera", "rsscn7", "dtd10", "brain_mri_tumor", "digits")
FIXED = ("feature_extraction", "partial", "gradual", "full", "two_phase", "lp_ft")
DEFAULT_STRATEGY = "full"  # train.yaml's strategy
START, END = "<!-- auto-evidence:start -->", "<!-- auto-evidence:end -->"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def source_root(name: str, shared: Path) -> Path:
    if name == "digits":
        sys.path.insert(0, str(ROOT / "src"))
        from thawkit.data.digits import export_digits

        return export_digits()
    return shared / name


def subsample(src: Path, dst: Path, limits: dict[str, int], seed: int = 0) -> Path:
    """`src`'s train/ and val/ as symlinks, at most limits[split] images (even share per class)."""
    for split, limit in limits.items():
        classes = sorted(p for p in (src / split).iterdir() if p.is_dir())
        per_class = max(2, limit // len(classes)) if limit else None
        for c in classes:
            files = sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            random.Random(f"{seed}-{split}-{c.name}").shuffle(files)
            out = dst / split / c.name
            out.mkdir(parents=True, exist_ok=True)
            for f in files[:per_class]:
                link = out / f.name
                if not link.exists():
                    link.symlink_to(f.resolve())
    return dst


def read_runs(folder: Path) -> list[dict]:
    """The finished runs under `folder`, one per (strategy, seed): the first found (runs are
    deterministic by seed; a second copy would weigh that seed twice in the mean)."""
    rows, seen = [], set()
    for path in sorted(folder.rglob("summary.json")):
        s = json.loads(path.read_text())
        if s.get("status", "finished") not in ("finished", "completed") and not s.get("best"):
            continue
        acc = (s.get("best") or {}).get("val/acc")
        # With WiSE-FT (wiseft=true, or auto's choice) the run's model is the chosen mix: its
        # val accuracy, chosen on val as the best checkpoint's epoch is.
        acc = (s.get("wiseft") or {}).get("val/acc", acc)
        if acc is None:
            continue
        if (s["strategy"], s.get("seed")) in seen:
            continue
        seen.add((s["strategy"], s.get("seed")))
        auto = s.get("auto") or {}
        rows.append({
            "strategy": s["strategy"], "seed": s.get("seed"), "acc": float(acc),
            "chosen": auto.get("chosen"), "race": auto.get("race"),
            "epochs": (auto.get("schedule") or {}).get("epochs") or len(s.get("history") or []),
            "wiseft": (s.get("wiseft") or {}).get("chosen"),
            "train_time_s": s.get("train_time_s"), "dir": str(path.parent),
        })  # fmt: skip
    return rows


def run_sweep(
    data: Path,
    out: Path,
    strategies: list[str],
    args: argparse.Namespace,
    epochs: int | None,
    seeds: list[int],
) -> None:
    """One compare_strategies sweep; `epochs=None` leaves `trainer.max_epochs` to auto."""
    seeds = ",".join(str(s) for s in seeds)
    cmd = [
        sys.executable, str(ROOT / "train.py"), "-m", "experiment=compare_strategies",
        f"strategy={','.join(strategies)}", f"seed={seeds}", f"data.root={data}",
        f"data.image_size={args.size}",
        *([f"trainer.max_epochs={epochs}"] if epochs is not None else []),
        f"hydra.sweep.dir={out}", "callbacks.progress_bar=null",
        "+trainer.enable_progress_bar=false", *args.overrides,
    ]  # fmt: skip
    print("  $", " ".join(cmd[1:]), flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    log = out.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        print(f"  sweep failed (rc {proc.returncode}); see {log}", flush=True)


def prune_checkpoints(folder: Path) -> int:
    """Removes the `*.ckpt` files of the completed runs under `folder` (their `summary.json`
    says so); an interrupted or failed run keeps its own, to resume from. Returns bytes freed."""
    freed = 0
    for summary in folder.rglob("summary.json"):
        if json.loads(summary.read_text()).get("status") != "completed":
            continue
        for ckpt in (summary.parent / "checkpoints").glob("*.ckpt"):
            freed += ckpt.stat().st_size
            ckpt.unlink()
    return freed


def stats(accs: list[float]) -> tuple[float, float]:
    return statistics.mean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)


def fmt(accs: list[float]) -> str:
    m, s = stats(accs)
    return f"{m:.3f} ± {s:.3f}"


def best_fixed(rows: list[dict]) -> str | None:
    """The fixed strategy with the highest mean best val accuracy among `rows`."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["strategy"] != "auto":
            by.setdefault(r["strategy"], []).append(r["acc"])
    return max(by, key=lambda k: stats(by[k])[0]) if by else None


def ensure(
    data: Path, folder: Path, strategies: list[str], args: argparse.Namespace, epochs: int | None
) -> list[dict]:
    """The runs of `strategies` x `args.seeds` in `folder`, running the missing ones first."""
    done = {(r["strategy"], r["seed"]) for r in read_runs(folder)} if folder.is_dir() else set()
    # One sweep per set of missing seeds: a strategy missing seed 3 runs seed 3 only.
    groups: dict[tuple[int, ...], list[str]] = {}
    for s in strategies:
        missing = tuple(k for k in args.seeds if (s, k) not in done)
        if missing:
            groups.setdefault(missing, []).append(s)
    for i, (seeds, todo) in enumerate(groups.items() if not args.report_only else ()):
        print(f"{folder.name}: running {todo} x seeds {list(seeds)}", flush=True)
        out = folder / (time.strftime("%H-%M-%S") + (f"-{i}" if i else ""))
        run_sweep(data, out, todo, args, epochs, list(seeds))
        if not args.keep_checkpoints and out.is_dir():
            print(f"  removed {prune_checkpoints(out) / 2**20:.0f} MB of checkpoints", flush=True)
    return [r for r in read_runs(folder) if r["seed"] in args.seeds] if folder.is_dir() else []


def evidence(name: str, rows: list[dict], tolerance: float) -> tuple[list[str], dict]:
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["strategy"], []).append(r["acc"])
    fixed = {k: v for k, v in by.items() if k != "auto"}
    if not fixed or "auto" not in by:
        return [f"| {name} | (incomplete: {sorted(by)}) | | | | | |"], {}
    best = max(fixed, key=lambda k: stats(fixed[k])[0])
    auto, best_m = stats(by["auto"])[0], stats(fixed[best])[0]
    default = by.get(DEFAULT_STRATEGY)
    picks = [
        r["chosen"] + ("" if r.get("wiseft") is None else f" (WiSE-FT a={r['wiseft']:g})")
        for r in sorted(rows, key=lambda r: r["seed"])
        if r["strategy"] == "auto"
    ]
    # float32 accuracies (and WiSE-FT's, rounded): exactly 1 point is within, equal is not below.
    ok_best = auto >= best_m - tolerance - 1e-6
    ok_default = default is None or auto >= stats(default)[0] - 1e-6
    gap = round(100 * (auto - best_m), 1) + 0.0  # + 0.0: no "-0.0"
    row = (
        f"| {name} | {', '.join(picks)} | {fmt(by['auto'])} | {best} {fmt(fixed[best])} | "
        f"{fmt(default) if default else '-'} | {gap:+.1f} | "
        f"{'yes' if ok_best else 'no'} / {'yes' if ok_default else 'no'} |"
    )
    per = {k: fmt(v) for k, v in sorted(by.items())}
    return [row], {"set": name, "per_strategy": per, "picks": picks}


def own_epochs(
    name: str, data: Path, out: Path, tag: str, rows: list[dict], args: argparse.Namespace
) -> str:
    """auto without `trainer.max_epochs`, and the fixed strategies at the epochs it picked:
    one table row (the `evidence` comparison at equal epochs, with auto's epochs)."""
    autos = ensure(data, out / f"{tag}-autoep", ["auto"], args, None)
    autos = [r for r in autos if r["strategy"] == "auto"]
    if not autos:
        return f"| {name} | | (auto at its own epochs: no finished run) | | | | | |"
    epochs = max(r["epochs"] for r in autos)
    best = best_fixed(rows)
    fixed = list(dict.fromkeys(best if s == "best" else s for s in args.own_epochs_strategies))
    fixed = [s for s in fixed if s]
    same = ensure(data, out / f"{tag}-{epochs}ep", fixed, args, epochs)
    same = [r for r in same if r["strategy"] in fixed]
    row, _ = evidence(name, autos + same, args.tolerance)
    chosen = sorted({r["epochs"] for r in autos})
    return row[0].replace(f"| {name} |", f"| {name} | {', '.join(map(str, chosen))} |", 1)


def write_doc(path: Path, text: str) -> None:
    block = f"{START}\n{text}\n{END}"
    old = path.read_text()
    if START in old:
        before, _, rest = old.partition(START)
        path.write_text(before + block + rest.partition(END)[2])
    else:
        path.write_text(old.rstrip() + f"\n\n{block}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--strategies", nargs="+", default=[*FIXED, "auto"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=5, help="trainer.max_epochs for every run")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--max-train", type=int, default=0, help="train images per set (0 = all)")
    p.add_argument("--max-val", type=int, default=0, help="val images per set (0 = all)")
    p.add_argument("--data-dir", default=str(SHARED), help="folder of the shared datasets")
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument(
        "--own-epochs", action="store_true", help="also auto at its own epochs (module docstring)"
    )
    p.add_argument(
        "--own-epochs-strategies", nargs="+", default=["full", "best"],
        help="fixed strategies run at auto's epochs; best = the best at --epochs",
    )  # fmt: skip
    p.add_argument("--out", default=str(ROOT / "multirun" / "auto_evidence"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "strategies.md"))
    p.add_argument("--no-doc", action="store_true", help="print the table only")
    p.add_argument(
        "--keep-checkpoints", action="store_true", help="keep each finished run's checkpoints"
    )
    p.add_argument("--report-only", action="store_true", help="run nothing; tabulate --out")
    p.add_argument("overrides", nargs="*", help="more Hydra overrides for every run")
    args = p.parse_args()
    out = Path(args.out).resolve()
    load = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M")
    t0 = time.perf_counter()
    lines = [
        "| set | auto's picks (by seed) | auto | best fixed | default (full) | auto - best, "
        "points | within 1 point / not below default |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    details, own_rows = [], []
    for name in args.sets:
        tag = f"{name}-{args.size}px-{args.max_train or 'all'}x{args.max_val or 'all'}"
        data = source_root(name, Path(args.data_dir))
        if (args.max_train or args.max_val) and not args.report_only:
            data = subsample(
                data, out / "data" / tag, {"train": args.max_train, "val": args.max_val}
            )
        rows = ensure(data, out / f"{tag}-{args.epochs}ep", args.strategies, args, args.epochs)
        row, detail = evidence(name, rows, args.tolerance)
        lines += row
        if detail:
            details.append(detail)
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in detail["per_strategy"].items()))
        if args.own_epochs:
            own_rows.append(own_epochs(name, data, out, tag, rows, args))
    load_after = os.getloadavg()
    head = (
        f"Run {started}: `python benchmarks/auto_evidence.py {' '.join(sys.argv[1:])}`; "
        f"EfficientNet-Lite0 (bundled) at {args.size} px, trainer.max_epochs={args.epochs} for "
        f"every run, seeds {args.seeds}, train images per set: {args.max_train or 'all'}, val: "
        f"{args.max_val or 'all'}. Best val accuracy, mean ± standard deviation over seeds. "
        f"Load average {load[0]:.1f} before, {load_after[0]:.1f} after; "
        f"{(time.perf_counter() - t0) / 60:.0f} min."
    )
    strategies = sorted({k for d in details for k in d["per_strategy"]})
    per = [
        "",
        "Every strategy (same runs):",
        "",
        "| set | " + " | ".join(strategies) + " |",
        "|---|" + "---:|" * len(strategies),
    ]
    for d in details:
        per.append(
            f"| {d['set']} | "
            + " | ".join(d["per_strategy"].get(k, "-") for k in strategies)
            + " |"
        )
    own = []
    if args.own_epochs:
        own = [
            "",
            "auto at its own epochs (no `trainer.max_epochs` given), against fixed strategies "
            "run for the same epochs (`best`: the best fixed strategy at "
            f"{args.epochs} epochs on that set):",
            "",
            "| set | auto's epochs | auto's picks (by seed) | auto | best fixed | default (full) "
            "| auto - best, points | within 1 point / not below default |",
            "|---|---:|---|---:|---:|---:|---:|---|",
            *own_rows,
        ]
    text = "\n".join([head, "", *lines, *per, *own])
    print("\n" + text)
    if not args.no_doc:
        write_doc(Path(args.doc), text)
        print(f"Wrote {args.doc}")


if __name__ == "__main__":
    main()
