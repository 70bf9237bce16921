"""The closest names offered for an unknown backbone: each once."""

from __future__ import annotations

import ast

from thawkit.config.checks import _check_backbone


def test_closest_backbone_names_do_not_repeat() -> None:
    errors: list[str] = []
    assert not _check_backbone("resnet05", errors)
    [message] = errors
    close = ast.literal_eval(message.split("Closest names: ")[1].rstrip("."))  # as printed
    assert close[0] == "resnet50" and len(close) == len(set(close)) == 3
