"""Text that names files: a file name that is not valid UTF-8 never crashes a write or loses a row.

Linux file names are bytes. Python decodes the ones that are not UTF-8 with surrogate escapes
(`b'bad\\xff.jpg'` becomes `'bad\\udcff.jpg'`), which a strict UTF-8 writer refuses. Every text
file and stream thawkit writes uses `errors="surrogateescape"`: such a name's own bytes go out
unchanged, so a path read back with `open(..., errors="surrogateescape")` (pandas:
`encoding_errors="surrogateescape"`) opens the same file. JSON escapes them (`"\\udcff"`), and
`json.loads` gives back the same name. docs/troubleshooting.md describes it for users.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import IO

ERRORS = "surrogateescape"


def open_text(path: str | os.PathLike, mode: str = "w", newline: str | None = None) -> IO[str]:
    """A UTF-8 text file whose file names keep their own bytes (see the module docstring)."""
    return open(path, mode, encoding="utf-8", errors=ERRORS, newline=newline)  # noqa: SIM115


def bytes_safe_streams() -> None:
    """stdout, stderr and the root logger's streams (console, `train.log`) take any file name.

    Called by each command once logging is set up (Hydra configures it before the command runs).
    """
    streams = [sys.stdout, sys.stderr]
    streams += [getattr(h, "stream", None) for h in logging.getLogger().handlers]
    for stream in streams:
        if isinstance(stream, io.TextIOWrapper) and stream.errors != ERRORS:
            try:
                stream.reconfigure(errors=ERRORS)
            except (ValueError, OSError):  # closed, or a stream that cannot change
                pass
