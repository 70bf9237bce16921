"""A fastai reference: the recipe a fastai user types, beside thawkit and the tutorial loop.

    python benchmarks/fastai_reference.py --data ../shared/data/hymenoptera
    nice -n 10 python benchmarks/fastai_reference.py --data DIR --size 96 --epochs 3 --seeds 0

fastai is never a dependency of thawkit: this script makes its own virtual environment under
the cache folder (`$THAWKIT_BENCH_CACHE`, default `~/.cache/thawkit`), `bench-fastai-venv`,
with `pip install torch==2.14.1 torchvision==0.29.1 fastai timm` (fastai 2.8 accepts that torch;
if a later fastai pins an older one, install it with `--no-deps` beside its pure-Python
dependencies: fastcore, fasttransform, fastprogress, fastdownload, plum-dispatch, pandas,
matplotlib, scikit-learn, spacy is only needed for text).

The fastai recipe, as its docs teach it: `ImageDataLoaders.from_folder` (train/ and val/),
`Resize` per item and `aug_transforms` per batch, `vision_learner` with a timm body
(`tf_efficientnet_lite0`, `pretrained=False`, then the bundled EfficientNet-Lite0 ImageNet weights
loaded into `learn.model[0].model`, the same weights thawkit uses; fastai normalises only for
pretrained bodies, so `Normalize.from_stats` with Lite0's mean/std is added), and
`fine_tune(epochs - 1, freeze_epochs=1)`, so every variant trains the same number of epochs.

Beside it, same data, size, epochs and seeds: thawkit's default (`strategy=full`), thawkit
`strategy=auto` (the epochs given, so it plans within them), and the tutorial loop
(benchmarks/reference_loop.py, two_phase: the head first, then everything, as fine_tune does).
Reported per variant: best and last val accuracy and the process wall time (imports
included, the same for all), mean over seeds. The table goes into docs/benchmarks.md between
`<!-- fastai:start -->` and `<!-- fastai:end -->`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = Path(os.environ.get("THAWKIT_BENCH_CACHE", "~/.cache/thawkit")).expanduser()
VENV = CACHE / "bench-fastai-venv"
REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1", "fastai", "timm"]
START, END = "<!-- fastai:start -->", "<!-- fastai:end -->"


def ensure_venv() -> Path:
    """The fastai environment's python, created on first use (pip from PyPI only)."""
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import fastai, timm"]
    if python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", *REQUIREMENTS], check=True)
    return python


def export_weights(path: Path) -> dict:
    """thawkit's bundled Lite0 weights as a timm state dict, and its preprocessing."""
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from thawkit.models.backbone import build_backbone

    backbone = build_backbone("tf_efficientnet_lite0", "bundled")
    torch.save(backbone.model.state_dict(), path)
    pre = backbone.preprocessing
    return {"mean": list(pre.mean), "std": list(pre.std), "crop_pct": pre.crop_pct}


def fastai_child(args: argparse.Namespace) -> None:
    """Runs inside the fastai environment: the recipe, timed, one JSON line out."""
    start = time.perf_counter()
    import torch
    from fastai.vision.all import (
        ImageDataLoaders,
        Normalize,
        Resize,
        accuracy,
        aug_transforms,
        set_seed,
        vision_learner,
    )

    pre = json.loads(args.pre)
    set_seed(args.seed, reproducible=True)
    dls = ImageDataLoaders.from_folder(
        args.data, train="train", valid="val", bs=args.batch_size, seed=args.seed,
        item_tfms=Resize(round(args.size / pre["crop_pct"])),
        batch_tfms=[*aug_transforms(size=args.size), Normalize.from_stats(pre["mean"], pre["std"])],
    )  # fmt: skip
    learn = vision_learner(dls, "tf_efficientnet_lite0", pretrained=False, metrics=accuracy)
    missing, unexpected = learn.model[0].model.load_state_dict(
        torch.load(args.weights, weights_only=True), strict=False
    )
    assert not missing and not unexpected, (missing, unexpected)
    learn.fine_tune(args.epochs - 1, freeze_epochs=1)
    accs = [float(v[2]) for v in learn.recorder.values]
    print(json.dumps({"accs": accs, "inner_wall_s": time.perf_counter() - start}))


def timed(cmd: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-3000:]}")
    return proc, time.perf_counter() - t0


def run_fastai(python: Path, weights: Path, pre: dict, seed: int, a: argparse.Namespace) -> dict:
    cmd = [str(python), __file__, "--child", "--data", a.data, "--size", str(a.size),
           "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--seed", str(seed),
           "--weights", str(weights), "--pre", json.dumps(pre)]  # fmt: skip
    proc, wall = timed(cmd, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    accs = json.loads(proc.stdout.strip().splitlines()[-1])["accs"]
    return {"best": max(accs), "last": accs[-1], "wall_s": wall}


def run_thawkit(strategy: str, seed: int, a: argparse.Namespace, tmp: Path) -> dict:
    out = tmp / f"thawkit-{strategy}-{seed}"
    cmd = [sys.executable, str(ROOT / "train.py"), f"strategy={strategy}",
           f"data.root={Path(a.data).resolve()}", f"data.image_size={a.size}",
           f"data.batch_size={a.batch_size}", f"trainer.max_epochs={a.epochs}", f"seed={seed}",
           "callbacks.early_stopping=null", "callbacks.progress_bar=null",
           "+trainer.enable_progress_bar=false", f"paths.output_dir={out}"]  # fmt: skip
    _, wall = timed(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    s = json.loads((out / "summary.json").read_text())
    accs = [h["val/acc"] for h in s["history"] if "val/acc" in h]
    row = {"best": s["best"]["val/acc"], "last": accs[-1], "wall_s": wall}
    if s.get("auto"):
        row["chosen"] = s["auto"]["chosen"]
    return row


def run_reference(seed: int, a: argparse.Namespace, tmp: Path) -> dict:
    out = tmp / f"reference-{seed}.json"
    cmd = [sys.executable, str(HERE / "reference_loop.py"), "two_phase", "--data", a.data,
           "--epochs", str(a.epochs), "--size", str(a.size), "--batch-size", str(a.batch_size),
           "--seed", str(seed), "--out", str(out)]  # fmt: skip
    _, wall = timed(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    r = json.loads(out.read_text())
    return {"best": r["best_val_acc"], "last": r["val_acc"], "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hymenoptera"))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--variants", nargs="+", default=["fastai", "default", "auto", "reference"])
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--pre", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        fastai_child(args)
        return
    if not (Path(args.data) / "train").is_dir():
        sys.exit(f"--data {args.data}: no train/ folder there")
    load = os.getloadavg()[0]
    started = time.strftime("%Y-%m-%d %H:%M")
    rows: dict[str, list[dict]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory(prefix="thawkit-fastai-") as tmp_name:
        tmp = Path(tmp_name)
        if "fastai" in args.variants:
            python = ensure_venv()
            weights = tmp / "lite0.pth"
            pre = export_weights(weights)
        for seed in args.seeds:
            for v in args.variants:
                if v == "fastai":
                    r = run_fastai(python, weights, pre, seed, args)
                elif v == "reference":
                    r = run_reference(seed, args, tmp)
                else:
                    r = run_thawkit("full" if v == "default" else v, seed, args, tmp)
                rows[v].append(r)
                print(f"  {v:10s} seed {seed}: {json.dumps(r)}", flush=True)
    names = {
        "fastai": "fastai `vision_learner` + `fine_tune`",
        "default": "thawkit default (`strategy=full`)",
        "auto": "thawkit `strategy=auto`",
        "reference": "tutorial loop (two_phase)",
    }
    lines = [
        f"Run {started}: `python benchmarks/fastai_reference.py {' '.join(sys.argv[1:])}`; "
        f"{args.data}, EfficientNet-Lite0 (bundled weights) at {args.size} px, {args.epochs} "
        f"epochs, batch {args.batch_size}, seeds {args.seeds}, mean over seeds (range). Load "
        f"average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| variant | best val acc | last val acc | wall s (process) |",
        "|---|---:|---:|---:|",
    ]
    for v, rs in rows.items():
        best = [r["best"] for r in rs]
        pick = f" (picked {', '.join(r['chosen'] for r in rs)})" if rs and "chosen" in rs[0] else ""
        lines.append(
            f"| {names.get(v, v)}{pick} | {statistics.mean(best):.3f} ({min(best):.3f}.."
            f"{max(best):.3f}) | {statistics.mean(r['last'] for r in rs):.3f} | "
            f"{statistics.mean(r['wall_s'] for r in rs):.0f} |"
        )
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_doc:
        doc = Path(args.doc)
        old = doc.read_text() if doc.is_file() else "# Benchmarks\n"
        block = f"{START}\n{text}\n{END}"
        if START in old:
            before, _, rest = old.partition(START)
            doc.write_text(before + block + rest.partition(END)[2])
        else:
            doc.write_text(old.rstrip() + f"\n\n## fastai reference\n\n{block}\n")


if __name__ == "__main__":
    main()
