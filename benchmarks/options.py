"""Measure each speed option on this machine: training step, feature extraction, memory.

    python benchmarks/options.py            # writes its table into docs/benchmarks.md

Each option runs in its own subprocess (thread settings and OpenMP environment are per
process): EfficientNet-Lite0 (bundled weights), batch 32, random inputs at --size px. Reported:
a full fine-tuning step (forward + backward + SGD step) and a feature-extraction forward (eval,
no_grad), in ms per image of wall and CPU time, medians of --steps steps after a warm-up step;
and, for a gradual state (top 2 groups train), what an explicit `no_grad` around the frozen
prefix saves over autograd's own skipping (activation bytes kept for backward, step time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- options:start -->", "<!-- options:end -->"

# name -> (environment, settings)
OPTIONS = {
    "baseline (fp32, NCHW)": ({}, {}),
    "channels_last": ({}, {"channels_last": True}),
    "bf16 autocast": ({}, {"bf16": True}),
    "channels_last + bf16": ({}, {"channels_last": True, "bf16": True}),
    "channels_last + torch.compile": ({}, {"channels_last": True, "compile": True}),
    "channels_last, 1 torch thread": ({}, {"channels_last": True, "threads": 1}),
    "channels_last, GOMP_SPINCOUNT=10000 (thawkit's)": (
        {"GOMP_SPINCOUNT": "10000"},
        {"channels_last": True},
    ),
    "channels_last, OMP_WAIT_POLICY=PASSIVE": (
        {"OMP_WAIT_POLICY": "PASSIVE"},
        {"channels_last": True},
    ),
}


def _timed(fn, steps: int) -> tuple[float, float]:
    fn()  # warm-up (and compilation)
    walls, cpus = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def measure(settings: dict, size: int, batch: int, steps: int) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from thawkit.models.backbone import build_backbone

    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    torch.manual_seed(0)
    backbone = build_backbone("tf_efficientnet_lite0", "bundled")
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, 2))
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))
    if settings.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    out: dict = {"threads": torch.get_num_threads()}
    if settings.get("compile"):
        t = time.perf_counter()
        model.compile()
        out["compile_note"] = "compiled lazily: first train and eval step include compilation"
        out["compile_setup_s"] = time.perf_counter() - t
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(settings.get("bf16")))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step() -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    def extract() -> None:
        with torch.no_grad(), autocast:
            backbone(x)

    model.train()
    t = time.perf_counter()
    train_step()
    out["first_train_step_s"] = time.perf_counter() - t
    out["train_wall_ms"], out["train_cpu_ms"] = (
        1000 * v / batch for v in _timed(train_step, steps)
    )
    model.eval()
    t = time.perf_counter()
    extract()
    out["first_extract_s"] = time.perf_counter() - t
    out["extract_wall_ms"], out["extract_cpu_ms"] = (
        1000 * v / batch for v in _timed(extract, steps)
    )
    return out


def measure_prefix(size: int, batch: int, steps: int) -> dict:
    """Gradual state (top 2 of 7 groups train): autograd's own skipping vs explicit no_grad."""
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from thawkit.models.backbone import build_backbone

    backbone = build_backbone("tf_efficientnet_lite0", "bundled").to(
        memory_format=torch.channels_last
    )
    head = torch.nn.Linear(backbone.num_features, 2)
    trainable = backbone.groups[-2:]
    for p in backbone.parameters():
        p.requires_grad_(False)
    for g in trainable:
        for p in g.params:
            p.requires_grad_(True)
    m = backbone.model
    blocks = list(m.blocks)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))
    # timm's EfficientNet: stem (conv_stem, bn1), blocks[0..6], conv_head, bn2, pool. The frozen
    # prefix is the stem and the block stages none of whose parameters train.
    n_frozen_blocks = sum(not any(p.requires_grad for p in b.parameters()) for b in blocks)
    assert not any(p.requires_grad for b in blocks[:n_frozen_blocks] for p in b.parameters())

    def forward(explicit: bool):
        with torch.set_grad_enabled(not explicit):
            h = m.bn1(m.conv_stem(x))
            for b in blocks[:n_frozen_blocks]:
                h = b(h)
        for b in blocks[n_frozen_blocks:]:
            h = b(h)
        h = m.global_pool(m.bn2(m.conv_head(h)))
        return head(h)

    out = {}
    for explicit in (False, True):
        saved = [0]

        def pack(t, saved=saved):
            saved[0] += t.numel() * t.element_size()
            return t

        def step(explicit=explicit, saved=saved):
            saved[0] = 0
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = torch.nn.functional.cross_entropy(forward(explicit), y)
            loss.backward()

        wall, _ = _timed(step, steps)
        key = "explicit_no_grad" if explicit else "autograd_only"
        trained = sum(p.grad is not None for p in backbone.parameters())
        out[key] = {
            "step_ms_per_image": 1000 * wall / batch,
            "saved_mb": saved[0] / 2**20,
            "params_with_grad": trained,
        }
        for p in backbone.parameters():
            p.grad = None
    return out


def run_child(name: str, args: argparse.Namespace) -> dict:
    # OpenMP settings come only from the option (torch is imported before thawkit in the child,
    # so thawkit's own default does not apply either).
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(PYTHONPATH=str(ROOT / "src"), **OPTIONS[name][0])
    cmd = [sys.executable, __file__, "--child", name, "--size", str(args.size),
           "--batch", str(args.batch), "--steps", str(args.steps)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--only", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "prefix":
        print(json.dumps(measure_prefix(args.size, args.batch, args.steps)))
        return
    if args.child:
        print(json.dumps(measure(OPTIONS[args.child][1], args.size, args.batch, args.steps)))
        return
    load = os.getloadavg()[0]
    results = {}
    for name in args.only:
        results[name] = r = run_child(name, args)
        print(f"{name}: {json.dumps(r)}", flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, __file__, "--child", "prefix", "--size", str(args.size),
           "--batch", str(args.batch), "--steps", str(args.steps)]  # fmt: skip
    prefix = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True,
                                       check=True).stdout.strip().splitlines()[-1])  # fmt: skip
    base = results.get("baseline (fp32, NCHW)")
    lines = [
        f"Options, measured {time.strftime('%Y-%m-%d %H:%M')} with `python benchmarks/options.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`: EfficientNet-Lite0, batch "
        f"{args.batch}, {args.size} px, median of {args.steps} steps after a warm-up; load "
        f"average {load:.1f} at the start. ms per image (wall / CPU).",
        "",
        "| option | threads | train step ms/img | vs baseline | extraction ms/img | vs baseline "
        "| first step s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        tr = f"{base['train_wall_ms'] / r['train_wall_ms']:.2f}x" if base else "-"
        ex = f"{base['extract_wall_ms'] / r['extract_wall_ms']:.2f}x" if base else "-"
        lines.append(
            f"| {name} | {r['threads']} | {r['train_wall_ms']:.1f} / {r['train_cpu_ms']:.1f} | "
            f"{tr} | {r['extract_wall_ms']:.1f} / {r['extract_cpu_ms']:.1f} | {ex} | "
            f"{r['first_train_step_s']:.1f} |"
        )
    a, e = prefix["autograd_only"], prefix["explicit_no_grad"]
    lines += [
        "",
        f"Frozen prefix (gradual, top 2 groups train): autograd alone keeps "
        f"{a['saved_mb']:.1f} MB of activations for backward at {a['step_ms_per_image']:.1f} "
        f"ms/img; an explicit `no_grad` around the frozen groups keeps {e['saved_mb']:.1f} MB at "
        f"{e['step_ms_per_image']:.1f} ms/img.",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    doc = Path(args.doc)
    block = f"{START}\n{text}\n{END}"
    if doc.is_file() and START in doc.read_text():
        before, _, rest = doc.read_text().partition(START)
        doc.write_text(before + block + rest.partition(END)[2])
    else:
        doc.parent.mkdir(parents=True, exist_ok=True)
        old = doc.read_text() if doc.is_file() else "# Benchmarks\n"
        doc.write_text(old.rstrip() + f"\n\n{block}\n")


if __name__ == "__main__":
    main()
