"""The command line before Hydra reads it: a hint where Hydra's override lexer gives none.

Hydra's override grammar takes characters outside ASCII only inside a quoted value:
`data.root=/data/données` fails with `LexerNoViableAltException` and a caret, nothing more.
Every Hydra command (`thawkit.cli.run_hydra`: `python train.py`, `thawkit predict`, ...) calls
`check_quoting` first, which stops with the quoted form that works.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException


def quoting_hint(arg: str) -> str | None:
    """For an override that Hydra cannot lex because it holds non-ASCII text unquoted, the
    message that shows how to quote it; None for any other argument."""
    if arg.startswith("-") or "=" not in arg or arg.isascii():
        return None
    try:
        OverridesParser.create().parse_overrides([arg])
    except OverrideParseException:
        key, _, value = arg.partition("=")
        inner = '"' if "'" in value else "'"
        outer = "'" if inner == '"' else '"'
        quoted = f"{key}={outer}{inner}{value}{inner}{outer}"
        return (
            f"{arg}: Hydra reads characters outside ASCII only inside quotes. Quote the value "
            f"for Hydra, inside the shell's quotes: {quoted}"
        )
    return None


def check_quoting(argv: Sequence[str] | None = None) -> None:
    """Exit (status 1, as for Hydra's own errors) naming each override to quote and how."""
    hints = [h for h in map(quoting_hint, sys.argv[1:] if argv is None else argv) if h]
    if hints:
        sys.exit("\n".join(["Cannot read the command line:", *hints]))
