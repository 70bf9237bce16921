"""A non-ASCII value on the command line: a hint that shows the quoting, and the hint works."""

from __future__ import annotations

import shlex
from pathlib import Path

from thawkit.config.quoting import quoting_hint
from train_cli import run_train


def test_non_ascii_path_gets_a_quoting_hint_that_works(tmp_path: Path) -> None:
    folder = tmp_path / "données"
    done = run_train("--cfg", "job", f"data.root={folder}", timeout=120)
    assert done.returncode != 0
    assert "LexerNoViableAltException" not in done.stderr
    hint = quoting_hint(f"data.root={folder}")
    assert hint is not None and hint in done.stderr
    # The hint's form, as the shell hands it to train.py, reaches the config intact.
    [quoted] = shlex.split(hint.rsplit(": ", 1)[1])
    assert quoted == f"data.root='{folder}'"
    shown = run_train("--cfg", "job", quoted, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert f"root: {folder}" in shown.stdout


def test_plain_and_quoted_arguments_pass() -> None:
    for arg in ("data.root=/data/photos", "data.root='/data/données'", "-m", "strategy=full"):
        assert quoting_hint(arg) is None
