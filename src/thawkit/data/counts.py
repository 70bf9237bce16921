"""Images per class of every split, and their text table (the figure: thawkit.reporting.plots)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from thawkit.data.folder import Sample
from thawkit.data.imbalance import class_counts


def split_class_counts(
    class_names: Sequence[str], splits: Mapping[str, Sequence[Sample]]
) -> dict[str, dict[str, int]]:
    """Images per class in every split: {split: {class_name: count}}."""
    return {
        split: dict(
            zip(
                class_names,
                class_counts([y for _, y in samples], len(class_names)).tolist(),
                strict=True,
            )
        )
        for split, samples in splits.items()
    }


def counts_table(counts: Mapping[str, Mapping[str, int]]) -> str:
    """Per-class counts of every split as a fixed-width text table (with totals)."""
    splits = list(counts)
    names = list(next(iter(counts.values())))
    width = max(len(c) for c in [*names, "class", "total"])
    col = max(8, *(len(s) + 2 for s in splits))
    lines = ["class".ljust(width) + "".join(s.rjust(col) for s in splits)]
    lines += [c.ljust(width) + "".join(str(counts[s][c]).rjust(col) for s in splits) for c in names]
    lines.append(
        "total".ljust(width) + "".join(str(sum(counts[s].values())).rjust(col) for s in splits)
    )
    return "\n".join(lines)
