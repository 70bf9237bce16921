"""Applying the frozen state: the top groups unfreeze once and keep their step; the eval-mode
warning filter sees exactly the frozen norms; the checkpoint's data record."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

from thawkit.finetune.checkpoint_meta import data_meta, drop_prefixed
from thawkit.finetune.frozen import FrozenNormsWarningFilter, unfreeze_top
from thawkit.finetune.module import FineTuneModule


def test_unfreeze_top_never_refreezes_nor_moves_a_step() -> None:
    since: dict[str, int | None] = {"head": 0, "a": None, "b": None, "c": None}
    top_down = ["c", "b", "a"]
    assert unfreeze_top(since, top_down, 1, step=5) == ["c"]
    assert unfreeze_top(since, top_down, 2, step=9) == ["b"]  # c keeps step 5
    assert unfreeze_top(since, top_down, 1, step=12) == []  # fewer than trained: no re-freeze
    assert unfreeze_top(since, top_down, 99, step=20) == ["a"]  # capped at the groups there are
    assert since == {"head": 0, "a": 20, "b": 9, "c": 5}
    fresh = dict.fromkeys(top_down)
    assert unfreeze_top(fresh, top_down, -1, step=0) == top_down


def _entries() -> list:
    return [f for f in warnings.filters if "eval mode" in getattr(f[1], "pattern", "")]


def test_warning_filter_only_for_exactly_the_frozen_norms() -> None:
    module = FineTuneModule(2, "test_efficientnet", "none")  # every group frozen
    states = module._group_states()
    frozen = sum(len(g.norms) for g, _ in states)
    filt = FrozenNormsWarningFilter()
    filt.install(module, states, "frozen_groups")
    assert [f[1].pattern for f in _entries()] == [
        rf"Found {frozen} module\(s\) in eval mode at the start of training"
    ]
    filt.remove()
    assert _entries() == []
    module.head.eval()  # a module the policy did not freeze: Lightning must still warn
    filt.install(module, states, "frozen_groups")
    assert _entries() == []
    filt.remove()  # nothing installed: a no-op


def test_data_meta_records_absolute_paths(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    dm = SimpleNamespace(image_size=64.0, val_fraction=0.2, test_fraction=0.1, seed=3,
                         root="images", digits_root=None, exclude="audit.json")  # fmt: skip
    assert data_meta(dm) == {
        "image_size": 64,
        "data": {"val_fraction": 0.2, "test_fraction": 0.1, "seed": 3,
                 "root": str(tmp_path / "images"), "digits_root": None,
                 "exclude": str(tmp_path / "audit.json")},
    }  # fmt: skip
    assert data_meta(None) == {} and data_meta(SimpleNamespace()) == {}
    state = {"domain_loss.w": 1, "head.w": 2, "domain_lossless": 3}
    drop_prefixed(state, "domain_loss.")
    assert state == {"head.w": 2, "domain_lossless": 3}
