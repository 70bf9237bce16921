"""How well the data audit finds known corruption, and what it costs.

For each photo set: a temporary copy (hard links) of its train/val folders, audited clean
(every finding there is a false alarm, or a real flaw of the set), then corrupted with a seed and
audited again: a fraction of the training labels flipped (the file moved to another class
folder), train images copied into val (leakage), exact copies within train, and near-duplicates
(a train image resized and re-encoded as JPEG, saved beside it). Prints, per set, precision and
recall of each kind (label errors: recall within the first 2x the number flipped of the ranked
list), the audit's wall time against its own frozen forward pass and one training epoch, and
the cosine similarities behind the near-duplicate threshold.

    python benchmarks/audit.py                          # the issue's setting: every set, all images
    python benchmarks/audit.py --max-train 200 --image-size 128   # a small run on a busy machine
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]
os.environ.setdefault("THAWKIT_OFFLINE", "1")

SETS = ("hymenoptera", "rsscn7", "dtd10", "brain_mri_tumor")
# The project's shared data beside the checkout (../shared/data), or beside a parent folder.
DATA = Path(
    os.environ.get("THAWKIT_BENCH_DATA")
    or next((str(p / "shared/data") for p in ROOT.parents if (p / "shared/data").is_dir()), "")
)


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def clean_copy(source: Path, dest: Path, max_train: int | None, max_val: int | None, rng) -> None:
    """train/ and val/ of `source` under `dest` (hard links), each subsampled per class."""
    for split, cap in (("train", max_train), ("val", max_val)):
        classes = sorted(p for p in (source / split).iterdir() if p.is_dir())
        total = sum(len(list(c.iterdir())) for c in classes)
        for c in classes:
            files = sorted(f for f in c.iterdir() if f.is_file())
            if cap is not None and total > cap:
                files = sorted(rng.sample(files, max(2, round(len(files) * cap / total))))
            for f in files:
                link(f, dest / split / c.name / f.name)


def corrupt(root: Path, flip: float, leak: int, dups: int, near: int, rng) -> dict:
    """Plant the corruption in `root`; returns the planted files by kind."""
    from PIL import Image

    train = sorted(p for p in (root / "train").rglob("*") if p.is_file())
    classes = sorted(p.name for p in (root / "train").iterdir())
    picked = rng.sample(train, min(len(train), int(round(flip * len(train))) + leak + dups + near))
    n_flip = int(round(flip * len(train)))
    flips, rest = picked[:n_flip], picked[n_flip:]
    plants: dict = {"flipped": [], "leak": [], "dups": [], "near": []}
    for f in flips:
        other = rng.choice([c for c in classes if c != f.parent.name])
        dst = root / "train" / other / f"flipped_{f.name}"
        f.rename(dst)
        plants["flipped"].append(str(dst))
    for f in rest[:leak]:
        dst = root / "val" / f.parent.name / f"leak_{f.name}"
        link(f, dst)
        plants["leak"].append((str(f), str(dst)))
    for f in rest[leak : leak + dups]:
        dst = f.parent / f"dup_{f.name}"
        link(f, dst)
        plants["dups"].append((str(f), str(dst)))
    for f in rest[leak + dups : leak + dups + near]:
        dst = f.parent / f"near_{f.stem}.jpg"
        with Image.open(f) as img:
            img = img.convert("RGB")
            img.resize((max(1, img.width * 3 // 4), max(1, img.height * 3 // 4))).save(
                dst, quality=80
            )
        plants["near"].append((str(f), str(dst)))
    return plants


def run_audit(root: Path, out: Path, args) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import thawkit
    from thawkit.audit.command import audit

    overrides = [f"data.root={root}", "progress=false", f"gallery={args.gallery}"]
    overrides += [f"data.image_size={args.image_size}"] if args.image_size else []
    overrides += [f"near_duplicate_threshold={args.threshold}"] if args.threshold else []
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(thawkit.CONF_DIR)):
        cfg = compose("audit", overrides)
    return audit(cfg, out)


def pair_sets(entries: list[dict]) -> list[frozenset]:
    return [frozenset(f["path"] for f in e["files"]) for e in entries]


def found(planted: list, entries: list[dict]) -> tuple[int, int]:
    """(planted pairs found, entries) for pair kinds."""
    pairs = pair_sets(entries)
    hits = sum(any(set(p) <= q for q in pairs) for p in planted)
    return hits, len(entries)


def one_epoch(root: Path, out: Path, args) -> float:
    """Seconds of one fine-tuning epoch (strategy=full) on `root`, as thawkit trains it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import thawkit
    from thawkit.run.train import train

    overrides = [f"data.root={root}", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                 "callbacks.progress_bar=null", "data.num_workers=0"]  # fmt: skip
    overrides += [f"data.image_size={args.image_size}"] if args.image_size else []
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(thawkit.CONF_DIR)):
        cfg = compose("train", overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    train(cfg)
    summary = json.loads((out / "summary.json").read_text())
    return float(summary["history"][0]["epoch_time_s"])


def bench(name: str, args, work: Path) -> dict:
    rng = random.Random(args.seed)
    clean, dirty = work / name / "clean", work / name / "corrupted"
    clean_copy(DATA / name, clean, args.max_train, args.max_val, rng)
    shutil.copytree(clean, dirty, copy_function=os.link)
    plants = corrupt(dirty, args.flip, args.leak, args.dups, args.near, rng)
    start = time.perf_counter()
    base = run_audit(clean, work / name / "audit_clean", args)
    clean_s = time.perf_counter() - start
    rec = run_audit(dirty, work / name / "audit_corrupted", args)
    k = len(plants["flipped"])
    top = [e["files"][0]["path"] for e in rec["label_issues"][: 2 * k]]
    label_hits = len(set(top) & set(plants["flipped"]))
    leak_hits, leak_n = found(plants["leak"], rec["leakage"])
    dup_hits, dup_n = found(plants["dups"], rec["duplicates"])
    near_hits, near_n = found(plants["near"], rec["near_duplicates"] + rec["leakage"])
    near_sims = [
        e["score"]
        for e in rec["near_duplicates"] + rec["leakage"]
        if any(set(p) <= {f["path"] for f in e["files"]} for p in plants["near"])
    ]
    row = {
        "set": name,
        "train": rec["splits"].get("train", 0),
        "val": rec["splits"].get("val", 0),
        "flipped": k,
        "label_recall_2x": label_hits / max(1, k),
        "label_precision_2x": label_hits / max(1, len(top)),
        "label_listed": len(rec["label_issues"]),
        "label_recall_all": len(
            {e["files"][0]["path"] for e in rec["label_issues"]} & set(plants["flipped"])
        )
        / max(1, k),  # fmt: skip
        "leak_recall": leak_hits / max(1, len(plants["leak"])),
        "leak_precision": leak_hits / max(1, leak_n),
        "dup_recall": dup_hits / max(1, len(plants["dups"])),
        "dup_precision": dup_hits / max(1, dup_n),
        "near_recall": near_hits / max(1, len(plants["near"])),
        "near_precision": near_hits / max(1, len(rec["near_duplicates"])),
        "near_min_similarity": min(near_sims) if near_sims else None,
        "clean_alarms": {k2: base["counts"][k2] for k2 in base["counts"]},
        "clean_nearest": base["nearest_similarity"],
        "audit_s": rec["time_s"]["total"],
        "forward_s": rec["time_s"]["forward"],
        "clean_audit_s": clean_s,
    }
    if not args.no_epoch:
        row["epoch_s"] = one_epoch(clean, work / name / "epoch", args)
    return row


def table(rows: list[dict]) -> str:
    head = ("| set | train/val | flipped | label recall (top 2x) | label precision (top 2x) "
            "| leakage found | exact dups found | near-dups found (min sim) | false alarms on the "
            "clean set (leak/dup/near/label/outlier/unusable) | audit s | forward s | ratio "
            "| epoch s |")  # fmt: skip
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        c = r["clean_alarms"]
        alarms = "/".join(str(c[k]) for k in ("leakage", "duplicates", "near_duplicates",
                                               "label_issues", "outliers", "unusable"))  # fmt: skip
        near_min = "-" if r["near_min_similarity"] is None else f"{r['near_min_similarity']:.3f}"
        epoch = f"{r['epoch_s']:.1f}" if "epoch_s" in r else "-"
        ratio = r["audit_s"] / r["forward_s"] if r["forward_s"] else float("nan")
        lines.append(
            f"| {r['set']} | {r['train']}/{r['val']} | {r['flipped']} "
            f"| {r['label_recall_2x']:.0%} | {r['label_precision_2x']:.0%} "
            f"| {r['leak_recall']:.0%} (precision {r['leak_precision']:.0%}) "
            f"| {r['dup_recall']:.0%} (precision {r['dup_precision']:.0%}) "
            f"| {r['near_recall']:.0%} ({near_min}) | {alarms} "
            f"| {r['audit_s']:.1f} | {r['forward_s']:.1f} | {ratio:.2f} | {epoch} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(SETS))
    p.add_argument("--max-train", type=int, default=None, help="train images per set (all)")
    p.add_argument("--max-val", type=int, default=None, help="val images per set (all)")
    p.add_argument("--image-size", type=int, default=None, help="the backbone's own when unset")
    p.add_argument("--threshold", type=float, default=None, help="near_duplicate_threshold")
    p.add_argument("--flip", type=float, default=0.05, help="fraction of train labels flipped")
    p.add_argument("--leak", type=int, default=10, help="train images copied into val")
    p.add_argument("--dups", type=int, default=5, help="exact copies within train")
    p.add_argument("--near", type=int, default=10, help="resized, re-encoded copies in train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gallery", type=int, default=0, help="thumbnails per gallery (0: none)")
    p.add_argument("--no-epoch", action="store_true", help="skip timing one training epoch")
    p.add_argument("--keep", type=Path, default=None, help="work here and keep it")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="thawkit-audit-bench-"))
    try:
        rows = []
        for name in args.sets:
            rows.append(bench(name, args, work))
            print(json.dumps(rows[-1]), flush=True)
        print(f"load average: {os.getloadavg()}")
        print(table(rows))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
