"""The honest reference of benchmarks/run.py: the floor, both plain loops and thawkit, side by side.

Every wall here is a whole process's, timed by run.py from outside (interpreter start and imports
included), since that is what a user waits for and what the floor is defined by. Targets:
thawkit feature_extraction within 1.1x the floor process; thawkit two_phase at most 0.6x the loop
with its workers matched to the cores, at equal or better val accuracy.
"""

from __future__ import annotations

import statistics

FLOOR_FACTOR = 1.1  # feature_extraction's whole process against the floor's
TWO_PHASE_FACTOR = 0.6  # two_phase's whole process against the matched plain loop's

TUTORIAL, MATCHED = "reference", "reference, workers matched"
LOOPS = (TUTORIAL, MATCHED, "thawkit")


def _verdict(ok: bool) -> str:
    return f"**{'met' if ok else 'NOT met'}**"


def _floor_stats(floors: list[dict]) -> dict:
    def med(key: str) -> float:
        return statistics.median(f[key] for f in floors)

    return {
        "process_wall_s": med("process_wall_s"),
        "wall_s": med("wall_s"),
        "forward_images_per_s": med("forward_images_per_s"),
        "decode_s": med("decode_s"),
        "images": int(med("images")),
        "batch_size": floors[0]["batch_size"],
        "peak_rss_mb": med("peak_rss_mb"),
    }


def _label(variant: str, workers: int) -> str:
    if variant == TUTORIAL:
        return "tutorial loop (num_workers=4)"
    if variant == MATCHED:
        return f"loop, workers matched (num_workers={workers}, persistent)"
    return variant


def reference_section(
    floors: list[dict], all_stats: dict[str, dict[str, dict]], matched_workers: int
) -> list[str]:
    """Markdown lines: the side-by-side table and the two targets (empty without a floor run)."""
    if not floors:
        return []
    floor = _floor_stats(floors)
    fe = all_stats.get("feature_extraction", {})
    tp = all_stats.get("two_phase", {})
    matched = tp.get(MATCHED)
    lines = [
        "### Floor, plain loops and thawkit (whole processes)",
        "",
        "| what | strategy | process wall s | wall s (imports excluded) | vs floor | "
        "vs matched loop | val acc | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| floor: {floor['images']} images decoded once, one frozen forward pass (inference "
        f"mode, channels_last, batch {floor['batch_size']}; forward "
        f"{floor['forward_images_per_s']:.1f} images/s, decoding {floor['decode_s']:.1f} s) "
        f"| - | {floor['process_wall_s']:.1f} | {floor['wall_s']:.1f} | 1.00 | - | - | "
        f"{floor['peak_rss_mb']:.0f} |",
    ]
    for strategy, stats in all_stats.items():
        base = stats.get(MATCHED)
        for variant in LOOPS:
            s = stats.get(variant)
            if not s:
                continue
            vs_matched = f"{s['process_wall_s'] / base['process_wall_s']:.2f}" if base else "-"
            lines.append(
                f"| {_label(variant, matched_workers)} | {strategy} | {s['process_wall_s']:.1f} "
                f"| {s['wall_s']:.1f} | {s['process_wall_s'] / floor['process_wall_s']:.2f} | "
                f"{vs_matched} | {s['val_acc']:.3f} | {s['peak_rss_mb']:.0f} |"
            )
    lines += ["", "Targets:", ""]
    tk = fe.get("thawkit")
    if tk:
        ratio = tk["process_wall_s"] / floor["process_wall_s"]
        lines.append(
            f"- thawkit feature_extraction, whole process within {FLOOR_FACTOR}x the floor "
            f"process: {tk['process_wall_s']:.1f} s vs {floor['process_wall_s']:.1f} s "
            f"({ratio:.2f}x): {_verdict(ratio <= FLOOR_FACTOR)}"
        )
    tk = tp.get("thawkit")
    if tk and matched:
        ratio = tk["process_wall_s"] / matched["process_wall_s"]
        ok = ratio <= TWO_PHASE_FACTOR and tk["val_acc"] >= matched["val_acc"]
        tutorial = tp.get(TUTORIAL)
        also = (
            f"; against the tutorial loop {tk['process_wall_s'] / tutorial['process_wall_s']:.2f}x"
            if tutorial
            else ""
        )
        lines.append(
            f"- thawkit two_phase <= {TWO_PHASE_FACTOR}x the matched plain loop's whole process "
            f"at >= its val accuracy: {tk['process_wall_s']:.1f} s vs "
            f"{matched['process_wall_s']:.1f} s ({ratio:.2f}x{also}), val acc "
            f"{tk['val_acc']:.3f} vs {matched['val_acc']:.3f}: {_verdict(ok)}"
        )
    return [*lines, ""]
