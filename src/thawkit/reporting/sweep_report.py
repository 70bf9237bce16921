"""The sweep report: one row per run, runs grouped by what the sweep varied, and a plot.

`python -m thawkit.reporting.sweep_report PATH` reports on any folder of runs (a multirun dir,
`outputs/`, one run); the Hydra callback
`thawkit.reporting.sweep_callback.SweepReportCallback` writes it when a multirun ends. It
writes, in PATH:

- `sweep_summary.csv`: one row per run: status, swept values, the optimised metric (the
  value `train.py` returned), best and test metrics, training time, the fit diagnosis, and
  the error of a failed run.
- `sweep_summary.md`: runs grouped by the swept factors (seeds pooled: mean +- std), sorted
  by the optimised metric; failed runs listed with their error; the Optuna best trial.
- `sweep_summary.png`: optimised metric against training time, one marker per strategy.

The runs and their rows come from reporting/sweep_runs.py: a run without a record of a
finished job is a failed row. Nothing silently vanishes.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from thawkit.reporting.sweep_runs import (
    BEST_KEYS,
    FIXED_COLUMNS,
    collect,
)

log = logging.getLogger(__name__)

CSV_NAME, MD_NAME, PLOT_NAME = "sweep_summary.csv", "sweep_summary.md", "sweep_summary.png"


def swept_factors(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Override keys whose value differs between runs, in the order they first appear."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row["factors"] if k not in keys]
    return [k for k in keys if len({r["factors"].get(k) for r in rows}) > 1]


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    factors = [k for k in swept_factors(rows) if k not in FIXED_COLUMNS]
    tests = sorted({k for r in rows for k in r if k.startswith("test/")})
    return [
        "job", "status", *factors, *FIXED_COLUMNS, "metric", "value", *BEST_KEYS, *tests,
        "train_time_s", "images_per_s", "epochs", "wall_time_s", "verdict", "diagnosis",
        "error", "overrides", *(["mlflow_run"] if any(r.get("mlflow_run") for r in rows) else []),
    ]  # fmt: skip


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    columns = _columns(rows)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                ["" if (v := row.get(c, row["factors"].get(c))) is None else v for c in columns]
            )
    return path


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def mean_std(values: Iterable[Any], digits: int = 4) -> str:
    """`mean ± std` over seeds (sample std), the mean alone for one value, `-` for none."""
    vals = _finite(values)
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.fmean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def group_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Runs grouped by the swept factors other than the seed, best group first."""
    factors = [k for k in swept_factors(rows) if k != "seed"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row["factors"].get(k, "") for k in factors), []).append(row)
    mode = rows[0]["mode"] if rows else "max"
    sign = -1.0 if mode == "max" else 1.0

    def rank(item: tuple[tuple, list[dict[str, Any]]]) -> tuple[int, float]:
        vals = _finite(r["value"] for r in item[1] if r["status"] == "completed")
        return (0, sign * statistics.fmean(vals)) if vals else (1, 0.0)

    ordered = sorted(groups.items(), key=rank)
    return factors, [{"key": key, "rows": members} for key, members in ordered]


def _verdicts(rows: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        if r.get("verdict"):
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return ", ".join(f"{v} x{n}" if n > 1 else v for v, n in counts.items()) or "-"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(
    rows: Sequence[dict[str, Any]], title: str, optuna: dict[str, Any] | None = None
) -> str:
    """The grouped table (mean ± std over seeds), failed runs, and the best run."""
    if not rows:
        return f"# Sweep summary: {title}\n\nNo runs found.\n"
    metric, mode = rows[0]["metric"], rows[0]["mode"]
    failed = [r for r in rows if r["status"] != "completed"]
    factors, groups = group_rows(rows)
    shown = ("test/acc", "test/f1_macro", "best/target/acc")
    tests = [k for k in shown if any(r.get(k) is not None for r in rows)]
    lines = [
        f"# Sweep summary: {title}",
        "",
        f"{len(rows)} runs: {len(rows) - len(failed)} completed, {len(failed)} failed. "
        f"Sorted by `{metric}` ({mode}; the best epoch's value, as `train.py` returns it), "
        "mean ± std over the runs of each group (seeds).",
        "",
    ]
    header = [*(factors or ["runs of"]), "runs", metric, *tests, "train time (s)", "fit"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        members = group["rows"]
        ok = [r for r in members if r["status"] == "completed"]
        runs = (
            str(len(members))
            if len(ok) == len(members)
            else f"{len(ok)}/{len(members)} ({len(members) - len(ok)} failed)"
        )
        cells = list(group["key"]) if factors else ["all"]
        cells += [runs, mean_std(r["value"] for r in ok)]
        cells += [mean_std(r.get(t) for r in ok) for t in tests]
        cells += [mean_std((r["train_time_s"] for r in ok), 1), _verdicts(ok)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    completed = [r for r in rows if r["status"] == "completed" and _finite([r["value"]])]
    if completed:
        pick = max if mode == "max" else min
        best = pick(completed, key=lambda r: r["value"])
        swept = ", ".join(f"{k}={best['factors'].get(k)}" for k in swept_factors(rows))
        lines += [
            "",
            f"Best run: {metric} = {best['value']:.4f} ({swept or 'the only run'}), "
            f"in `{best['job']}`.",
        ]
    if optuna:
        lines += ["", f"Optuna best trial: {metric} = {optuna.get('best_value')} with"]
        lines += [f"- `{k}={v}`" for k, v in (optuna.get("best_params") or {}).items()]
    lines += tracker_lines(rows)
    if failed:
        lines += ["", "## Failed runs", "", "| job | overrides | error |", "|---|---|---|"]
        lines += [
            f"| {_cell(r['job'])} | {_cell(r['overrides'])} | {_cell(r['error'])} |" for r in failed
        ]
    return "\n".join(lines) + "\n"


def tracker_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each run's link into MLflow, and MLflow's compare view of them all."""
    linked = [r for r in rows if r.get("mlflow_run")]
    if not linked:
        return []
    base = linked[0]["mlflow_run"].partition("/#/")[0]
    ids = [r["mlflow"]["run_id"] for r in linked]
    experiments = sorted({str(r["mlflow"]["experiment_id"]) for r in linked})
    compact = {"separators": (",", ":")}
    compare = (
        f"{base}/#/compare-runs?runs={json.dumps(ids, **compact)}"
        f"&experiments={json.dumps(experiments, **compact)}"
    )
    lines = ["", "## In MLflow", "", f"[Compare the {len(linked)} runs]({compare})"]
    if linked[0]["mlflow"].get("ui"):
        lines[-1] += f" (served by `{linked[0]['mlflow']['ui']}`)"
    lines.append("")
    lines += [f"- [{_cell(r['job'])}]({r['mlflow_run']})" for r in linked]
    return lines


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Optimised metric against training time, one marker (and colour) per strategy."""
    points = [
        r
        for r in rows
        if r["status"] == "completed" and len(_finite([r["value"], r["train_time_s"]])) == 2
    ]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One marker per strategy; when all runs share one, per the first other swept factor.
    factors = [k for k in swept_factors(rows) if k != "seed"]
    by = "strategy"
    if len({r["strategy"] for r in points}) == 1 and factors:
        by = factors[0]

    def label(r: dict[str, Any]) -> str:
        return str(r["strategy"] if by == "strategy" else r["factors"].get(by))

    markers = "osD^vP*Xhp<>"
    labels = list(dict.fromkeys(label(r) for r in points))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, name in enumerate(labels):
        mine = [r for r in points if label(r) == name]
        ax.scatter(
            [r["train_time_s"] for r in mine], [r["value"] for r in mine],
            marker=markers[i % len(markers)], s=60, label=name, alpha=0.8,
        )  # fmt: skip
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(points[0]["metric"])
    n_failed = sum(r["status"] != "completed" for r in rows)
    ax.set_title(title + (f" ({n_failed} failed runs not shown)" if n_failed else ""))
    ax.grid(alpha=0.3)
    ax.legend(title=by, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(root: str | Path) -> dict[str, Path]:
    """Write sweep_summary.{csv,md,png} into `root`; returns the paths written."""
    root = Path(root)
    rows = collect(root)
    title = root.name or str(root)
    optuna_file = root / "optimization_results.yaml"
    optuna = OmegaConf.to_container(OmegaConf.load(optuna_file)) if optuna_file.is_file() else None
    written = {"csv": write_csv(rows, root / CSV_NAME)}
    (root / MD_NAME).write_text(markdown(rows, title, optuna))
    written["md"] = root / MD_NAME
    if (png := plot(rows, root / PLOT_NAME, title)) is not None:
        written["png"] = png
    log.info("Sweep report (%d runs): %s", len(rows), ", ".join(str(p) for p in written.values()))
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m thawkit.reporting.sweep_report PATH`: write and print a folder's report."""
    parser = argparse.ArgumentParser(
        prog="python -m thawkit.reporting.sweep_report", description=main.__doc__
    )
    parser.add_argument("path", help="a multirun dir, an outputs dir, or one run dir")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.path)
    except FileNotFoundError as e:
        parser.error(str(e))
    print(written["md"].read_text())
    for path in written.values():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
