"""Calibration and test-time augmentation on the shared photo sets.

    python benchmarks/calibration.py                      # every set, full size, 224 px
    python benchmarks/calibration.py --size 112 --train-max 200 --epochs 3   # a small run
    python benchmarks/calibration.py --docs               # also write the table into
                                                          # docs/benchmarks.md

For each set (`../shared/data/<set>` with train/ and val/ of class folders), a folder of links is
made: the set's `val/` becomes the held-out **test** split; a seeded `--val-share` of `train/`
becomes the run's validation split (where the temperature is fitted), the rest trains. Then
`python train.py` fine-tunes EfficientNet-Lite0 (bundled weights, `--strategy`, `--epochs`,
`--size`) as a user would, which fits the temperature after fit. On the test split:
- ECE (15 bins) and NLL of best.ckpt with the temperature set to 1 (before) and fitted (after);
- accuracy and wall time of `evaluate` with `tta=none`, `flip` and `five_crop`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

SETS = ("hymenoptera", "rsscn7", "dtd10", "brain_mri_tumor")
# ../shared/data beside the checkout, or beside its parent (a git worktree sits one level deeper).
_BESIDE = [d / "shared" / "data" for d in (ROOT.parent, ROOT.parent.parent)]
DATA = Path(
    os.environ.get("THAWKIT_BENCH_DATA_ROOT")
    or next((d for d in _BESIDE if d.is_dir()), _BESIDE[0])
)
TTA = ("none", "flip", "five_crop")
START, END = "<!-- calibration:start -->", "<!-- calibration:end -->"


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def link_splits(source: Path, dest: Path, args: argparse.Namespace) -> dict[str, int]:
    """dest/{train,val,test}/<class>/ as links: test = source/val, val = a share of train."""
    rng = random.Random(args.seed)
    counts = {"train": 0, "val": 0, "test": 0}
    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
    cap = {k: getattr(args, f"{k}_max") // len(classes) for k in counts}  # per class; 0 = all
    for cls in classes:
        files = image_files(source / "train" / cls)
        rng.shuffle(files)
        n_val = max(2, round(len(files) * args.val_share))
        val, train = files[:n_val], files[n_val:]
        test = image_files(source / "val" / cls)
        train = train[: cap["train"] or None]
        val = val[: cap["val"] or None]
        test = test[: cap["test"] or None]
        for split, chosen in (("train", train), ("val", val), ("test", test)):
            (dest / split / cls).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                (dest / split / cls / f.name).symlink_to(f.resolve())
            counts[split] += len(chosen)
    return counts


def train_run(root: Path, run_dir: Path, args: argparse.Namespace) -> dict:
    """`python train.py` on `root`; returns its summary.json."""
    command = [
        sys.executable, str(ROOT / "train.py"), f"data.root={root}", f"strategy={args.strategy}",
        f"trainer.max_epochs={args.epochs}", f"data.image_size={args.size}",
        f"data.batch_size={args.batch_size}", f"hydra.run.dir={run_dir}", f"seed={args.seed}",
        "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        raise SystemExit(f"training failed on {root}:\n{tail}")
    return json.loads((run_dir / "summary.json").read_text())


def measure(name: str, args: argparse.Namespace, work: Path) -> dict:
    from thawkit.finetune.calibration import write_temperature
    from thawkit.inference.evaluate import evaluate

    root = work / name / "data"
    shutil.rmtree(work / name, ignore_errors=True)
    counts = link_splits(DATA / name, root, args)
    start = time.perf_counter()
    summary = train_run(root, work / name / "run", args)
    train_s = time.perf_counter() - start
    best = work / name / "run" / summary["checkpoint"]
    raw = best.with_name("uncalibrated.ckpt")
    shutil.copyfile(best, raw)
    write_temperature(raw, 1.0)
    common = {"root": root, "split": "test", "progress": False, "top_losses": 0}
    before = evaluate(raw, output_dir=work / name / "eval_raw", **common)
    row = {
        "set": name, **counts, "train_s": round(train_s, 1),
        "temperature": summary["calibration"]["temperature"],
        "val_ece_before": summary["calibration"]["ece_before"],
        "val_ece_after": summary["calibration"]["ece_after"],
        "ece_before": before["ece"], "nll_before": before["loss"],
    }  # fmt: skip
    draw_reliability(raw, best, root, work / name / "reliability_test.png", name)
    for tta in TTA:
        start = time.perf_counter()
        metrics = evaluate(best, output_dir=work / name / f"eval_{tta}", tta=tta, **common)
        row[f"acc_{tta}"] = metrics["acc"]
        row[f"s_{tta}"] = round(time.perf_counter() - start, 2)
        if tta == "none":
            row["ece_after"], row["nll_after"] = metrics["ece"], metrics["loss"]
    return row


def draw_reliability(raw: Path, best: Path, root: Path, out: Path, name: str) -> None:
    """The reliability diagram of the test split, before and after temperature scaling."""
    import torch

    from thawkit.finetune.calibration import calibration_record
    from thawkit.inference.evaluate import select_samples
    from thawkit.inference.predict import load_checkpoint, predict_probabilities
    from thawkit.reporting.calibration import reliability_figure
    from thawkit.reporting.plots import save_png

    model = load_checkpoint(raw)
    _, _, samples = select_samples(model, root, "test")
    labels = torch.tensor([y for _, y in samples])
    before, _ = predict_probabilities(model, [Path(p) for p, _ in samples], progress=False)
    temperature = float(load_checkpoint(best).module.temperature)
    logits = before.double().clamp_min(1e-12).log()  # log-softmax: the logits up to a constant
    record = calibration_record(logits, labels, temperature)
    after = (logits / temperature).softmax(1).numpy()
    title = f"{name}, held-out test split"
    fig = reliability_figure(before.double().numpy(), after, labels.numpy(), record, title)
    save_png(fig, out)


def table(rows: list[dict], args: argparse.Namespace, load: str) -> str:
    setting = (
        f"EfficientNet-Lite0 (bundled weights), strategy={args.strategy}, {args.epochs} epochs, "
        f"{args.size} px, batch {args.batch_size}, seed {args.seed}; train/val/test images per "
        f"set capped at {args.train_max or 'all'}/{args.val_max or 'all'}/"
        f"{args.test_max or 'all'} (split evenly over the classes)"
    )
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} with `python benchmarks/calibration.py "
        f"{' '.join(sys.argv[1:])}`: {setting}; load average {load} at the start.",
        "",
        "| set | train / val / test | T | test ECE before | test ECE after | test NLL before | "
        "test NLL after | acc none | acc flip | acc five_crop | s none | s flip | s five_crop |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['train']} / {r['val']} / {r['test']} | {r['temperature']:.2f} | "
            f"{r['ece_before']:.3f} | **{r['ece_after']:.3f}** | {r['nll_before']:.3f} | "
            f"{r['nll_after']:.3f} | {r['acc_none']:.3f} | {r['acc_flip']:.3f} | "
            f"{r['acc_five_crop']:.3f} | {r['s_none']:.1f} | {r['s_flip']:.1f} | "
            f"{r['s_five_crop']:.1f} |"
        )
    met = [r["ece_after"] < r["ece_before"] for r in rows]
    lines += [
        "",
        f"Target ECE after < ECE before on every set: {sum(met)} of {len(rows)} sets, "
        f"**{'met' if all(met) else 'not met'}**.",
    ]
    return "\n".join(lines)


def write_docs(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    doc = path.read_text()
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--strategy", default="full")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-share", type=float, default=0.25)
    parser.add_argument("--train-max", type=int, default=0, help="images per set; 0 = all")
    parser.add_argument("--val-max", type=int, default=0, help="images per set; 0 = all")
    parser.add_argument("--test-max", type=int, default=0, help="images per set; 0 = all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_calibration")
    parser.add_argument("--docs", action="store_true", help="write the table into the docs")
    args = parser.parse_args()
    load = f"{os.getloadavg()[0]:.1f}"
    rows = []
    for name in args.sets:
        rows.append(measure(name, args, args.work))
        print(json.dumps(rows[-1]), flush=True)
    text = table(rows, args, load)
    (args.work / "results.json").write_text(json.dumps(rows, indent=2))
    print(text)
    if args.docs:
        write_docs(text)


if __name__ == "__main__":
    main()
