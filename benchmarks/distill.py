"""Distillation: a Lite2 teacher, a Lite0 student distilled from it, and Lite0 trained alone.

For every photo set: fine-tune EfficientNet-Lite2 (the teacher, at its own size), then
EfficientNet-Lite0 twice with the same budget (strategy, epochs, image size, batch size, seed):
alone, and with `distill.teacher=<the teacher's best.ckpt>`. All three use the bundled ImageNet
weights and thawkit's own configs (`python train.py ...` composed in-process). Reported per set:
the best validation accuracy of each run (the kept checkpoint's), the last epoch's, the wall time
of each fit, and the share of the teacher's lead over Lite0 alone that distillation closed:

    closed = (acc(distilled) - acc(alone)) / (acc(teacher) - acc(alone))

(undefined when the teacher is not ahead). The defaults are the full setting; a small run:

    nice -n 10 python benchmarks/distill.py --sets hymenoptera rsscn7 --epochs 4 \\
        --student-size 128 --teacher-size 160 --train-per-class 40 --val-per-class 25
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

SETS = ("hymenoptera", "rsscn7", "dtd10", "brain_mri_tumor")


def default_data_dir() -> str:
    """`shared/data` beside the checkout or beside one of its parents (a git worktree)."""
    if os.environ.get("THAWKIT_BENCH_DATA"):
        return str(Path(os.environ["THAWKIT_BENCH_DATA"]).parent)
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return str(parent / "shared" / "data")
    return "shared/data"


def subsample(source: Path, dest: Path, per_class: dict[str, int | None], seed: int) -> Path:
    """Copy at most per_class[split] images of every class of source/<split>/ into dest."""
    rng = random.Random(seed)
    for split, limit in per_class.items():
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            files = sorted(p for p in class_dir.iterdir() if p.is_file())
            if limit is not None and len(files) > limit:
                files = sorted(rng.sample(files, limit))
            target = dest / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy2(f, target / f.name)
    return dest


def fit(overrides: list[str], out: Path) -> dict:
    """One thawkit run (build + fit, as train.py does); its summary.json and the fit's wall."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from thawkit import CONF_DIR
    from thawkit.run.train import build

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(
            config_name="train",
            overrides=[*overrides, f"paths.output_dir={out}"],
            return_hydra_config=True,
        )
    HydraConfig().set_config(cfg)
    datamodule, model, trainer = build(cfg)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    return {"summary": summary, "wall_s": wall, "checkpoint": out / "checkpoints" / "best.ckpt"}


def accuracy(run: dict) -> tuple[float, float]:
    """(best val/acc, last epoch's val/acc)."""
    s = run["summary"]
    return float(s["best"]["val/acc"]), float(s["history"][-1]["val/acc"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--sets", nargs="+", default=list(SETS))
    p.add_argument("--strategy", default="two_phase")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--student-size", type=int, default=224, help="Lite0's own size")
    p.add_argument("--teacher-size", type=int, default=260, help="Lite2's own size")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--weight", type=float, default=0.5, help="distill.weight")
    p.add_argument("--temperature", type=float, default=4.0, help="distill.temperature")
    p.add_argument("--train-per-class", type=int, default=None, help="subsample (None = all)")
    p.add_argument("--val-per-class", type=int, default=None, help="subsample (None = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overrides", nargs="*", default=[], help="more overrides for every run")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()

    common = [
        f"strategy={args.strategy}", f"trainer.max_epochs={args.epochs}",
        f"data.batch_size={args.batch_size}", f"seed={args.seed}", "data.num_workers=0",
        "callbacks.progress_bar=null", "trainer.enable_progress_bar=false", "~logger",
        "callbacks.views=null", *args.overrides,
    ]  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-distill-"))
    rows = []
    for name in args.sets:
        source = Path(args.data_dir) / name
        limits = {"train": args.train_per_class, "val": args.val_per_class}
        root = subsample(source, work / name / "data", limits, args.seed)
        data = [f"data.root={root}"]
        teacher = fit(
            [*common, *data, "model=efficientnet_lite2", f"data.image_size={args.teacher_size}"],
            work / name / "teacher",
        )
        student = [*common, *data, "model=default", f"data.image_size={args.student_size}"]
        alone = fit(student, work / name / "alone")
        distilled = fit(
            [
                *student,
                f"distill.teacher={teacher['checkpoint']}",
                f"distill.weight={args.weight}",
                f"distill.temperature={args.temperature}",
            ],
            work / name / "distilled",
        )
        (t_best, t_last), (a_best, a_last), (d_best, d_last) = (
            accuracy(r) for r in (teacher, alone, distilled)
        )
        gap = t_best - a_best
        row = {
            "set": name,
            "train_images": sum(1 for f in (root / "train").rglob("*") if f.is_file()),
            "val_images": sum(1 for f in (root / "val").rglob("*") if f.is_file()),
            "teacher": {"best": t_best, "last": t_last, "wall_s": teacher["wall_s"]},
            "alone": {"best": a_best, "last": a_last, "wall_s": alone["wall_s"]},
            "distilled": {"best": d_best, "last": d_last, "wall_s": distilled["wall_s"]},
            "closed": (d_best - a_best) / gap if gap > 0 else None,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(
        f"\n{args.strategy}, {args.epochs} epochs, Lite0 {args.student_size} px, Lite2 "
        f"{args.teacher_size} px, distill.weight={args.weight}, "
        f"distill.temperature={args.temperature}; load {os.getloadavg()[0]:.1f}\n"
    )
    print("| set | Lite2 teacher | Lite0 alone | Lite0 distilled | gap closed | wall s T/A/D |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        closed = f"{r['closed']:.0%}" if r["closed"] is not None else "n/a (teacher not ahead)"
        t, a, d = r["teacher"], r["alone"], r["distilled"]
        print(
            f"| {r['set']} | {t['best']:.3f} | {a['best']:.3f} | {d['best']:.3f} | {closed} | "
            f"{t['wall_s']:.0f} / {a['wall_s']:.0f} / {d['wall_s']:.0f} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
