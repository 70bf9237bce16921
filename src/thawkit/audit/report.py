"""What an audit writes: `audit.json` (every finding) and `audit.md` (a summary a person reads).

`audit.json` holds one list per finding kind, in `KINDS` order (leakage first: it inflates the
validation score silently); each entry names its files, a score and a suggested action, and lists
in `exclude` the files that action removes (`data.exclude=audit.json` trains without them). JSON
escapes a file name that is not UTF-8 (`"\\udcff"`), and `json.loads` gives the same name back;
`audit.md` keeps its own bytes (thawkit.textio).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thawkit.atomic import write_json_atomic
from thawkit.textio import open_text

KINDS = ("leakage", "duplicates", "near_duplicates", "label_issues", "outliers", "unusable")
# What each kind means, for the summary.
MEANING = {
    "leakage": "the same image (exact, or near by features) in two splits: inflates val/test "
    "scores",
    "duplicates": "byte-identical files within a split",
    "near_duplicates": "images with nearly the same features within a split (re-encoded, resized, "
    "burst shots)",
    "label_issues": "given label disagrees confidently with a cross-validated probe "
    "(confident learning, most likely first)",
    "outliers": "far from every class in feature space",
    "unusable": "unreadable, tiny, extremely elongated or nearly constant",
}
# Entries listed per kind in audit.md (all are in audit.json).
_LISTED = 10


def write_json(path: Path, record: dict[str, Any]) -> Path:
    write_json_atomic(path, record)
    return path


def _entry_line(kind: str, entry: dict[str, Any]) -> str:
    files = " <-> ".join(f"`{f['path']}` ({f['split']}/{f['label']})" for f in entry["files"][:3])
    more = f" and {len(entry['files']) - 3} more" if len(entry["files"]) > 3 else ""
    return f"- {files}{more}: score {entry['score']}; {entry['action']}"


def write_markdown(path: Path, record: dict[str, Any], galleries: dict[str, Path]) -> Path:
    """`audit.md`: counts per kind, the first entries of each, and the gallery of each."""
    splits = ", ".join(f"{k} {v}" for k, v in record["splits"].items())
    lines = [
        f"# Data audit of `{record['data_root']}`",
        "",
        f"{record['num_images']} images ({splits}), "
        f"{len(record['class_names'])} classes; features of `{record['backbone']}` "
        f"({record['weights']}) at {record['image_size']} px. Every entry, with its score and "
        "suggested action, is in `audit.json`; `python train.py data.exclude=audit.json ...` "
        "trains without the files the actions remove (each entry's `exclude`).",
        "",
        "| finding | count | what it means |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {len(record[k])} | {MEANING[k]} |" for k in KINDS]
    t = record["time_s"]
    lines += [
        "",
        f"Time: {t['total']:.1f} s in all, the frozen forward pass {t['forward']:.1f} s.",
    ]
    for kind in KINDS:
        entries = record[kind]
        if not entries:
            continue
        lines += ["", f"## {kind} ({len(entries)})", ""]
        if kind in galleries:
            lines += [f"![{kind}]({galleries[kind].name})", ""]
        lines += [_entry_line(kind, e) for e in entries[:_LISTED]]
        if len(entries) > _LISTED:
            lines.append(f"- ... {len(entries) - _LISTED} more in audit.json")
    with open_text(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
