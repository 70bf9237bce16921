"""The persistent cache: set-up work kept on disk, so later runs on the same data skip it.

A sweep (`-m strategy=full,two_phase,...`) runs the same set-up in every job: the bad-image
scan, the decode of every image, the frozen backbone's features. `DiskCache` keeps their results
under the thawkit cache dir (`cache_dir()`), in three kinds of entries:

| kind       | one entry per                     | keyed by                                        |
|------------|-----------------------------------|-------------------------------------------------|
| `scan`     | image folder (a row per file)     | the folder; each row by the file's identity     |
| `images`   | image file                        | file identity, resize side and interpolation    |
| `features` | split (a row per file)            | backbone, weights digest, transform, view, ...; |
|            |                                   | each row by the file's identity                 |

A file's identity is its absolute path, size and modification time (`file_identity`): an edited,
replaced or added file misses its own entries and rows only, everything else is reused.

Safe under parallel jobs (joblib's launcher runs several on one machine): every entry is written
to a temporary file in its folder and moved into place with `os.replace`, so a reader opens
either the old whole entry or the new whole one, never a half-written one. Every entry carries
a checksum of its bytes: a damaged one (a full disk, a crash of the file system) is deleted and
rebuilt, with a warning. The cache stays under `max_mb`: after a run adds entries, the least
recently used ones are removed (`trim`).

`thawkit cache show` prints where it is and what it holds; `thawkit cache clear` empties it.
`callbacks.speed.persistent_cache=false` turns it off for a run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from thawkit.textio import ERRORS

log = logging.getLogger(__name__)

KINDS = ("scan", "images", "features")
# Bumped when an entry's format changes: entries of another version are never read.
_MAGIC = b"thawkit-cache-1\n"
_DIGEST = 16
_TMP_PREFIX = ".tmp-"


def cache_dir() -> Path:
    """`$THAWKIT_CACHE`, else `$THAWKIT_DATA/cache`, else `~/.cache/thawkit/cache`."""
    if os.environ.get("THAWKIT_CACHE"):
        return Path(os.environ["THAWKIT_CACHE"]).expanduser()
    return Path(os.environ.get("THAWKIT_DATA", "~/.cache/thawkit")).expanduser() / "cache"


def file_identity(path: str | os.PathLike) -> str:
    """Absolute path, size and modification time (ns) of a file: what a cached result is for."""
    st = os.stat(path)
    return f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}"


def digest(*parts: str) -> str:
    """A short hex key over text parts (file names that are not UTF-8 keep their bytes)."""
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        h.update(part.encode("utf-8", ERRORS) + b"\n")
    return h.hexdigest()


class DiskCache:
    """Entries of bytes by (kind, key) in files under `root`, checksummed, written atomically.

    Args:
        root: the cache folder (None = `cache_dir()`).
        max_mb: size cap; `trim` removes the least recently used entries beyond it.
    """

    def __init__(self, root: str | os.PathLike | None = None, max_mb: float = 4096.0) -> None:
        if max_mb < 0:
            raise ValueError(f"callbacks.speed.persistent_cache_mb={max_mb} must be >= 0")
        self.root = Path(root).expanduser() if root else cache_dir()
        self.max_bytes = int(max_mb * 2**20)
        # {kind: Counter(hit=, miss=, written=, corrupt=)}: what this process reused and built.
        self.stats: dict[str, Counter] = {kind: Counter() for kind in KINDS}
        self._lock = threading.Lock()  # the image cache reads and writes from threads
        self._write_failed = False

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def _count(self, kind: str, what: str, n: int = 1) -> None:
        with self._lock:
            self.stats[kind][what] += n

    def read(self, kind: str, key: str) -> bytes | None:
        """The entry's bytes, or None when it is absent or damaged (then it is deleted)."""
        path = self._path(kind, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._count(kind, "miss")
            return None
        except OSError as e:
            log.warning("Persistent cache: cannot read %s (%s); building it again", path, e)
            self._count(kind, "miss")
            return None
        head = len(_MAGIC) + _DIGEST
        payload = data[head:]
        if (
            len(data) < head
            or not data.startswith(_MAGIC)
            or data[len(_MAGIC) : head] != hashlib.blake2b(payload, digest_size=_DIGEST).digest()
        ):
            self.corrupt(kind, key, "its checksum does not match its bytes")
            return None
        try:
            os.utime(path)  # recently used: `trim` keeps it longest
        except OSError:
            pass
        self._count(kind, "hit")
        return payload

    def corrupt(self, kind: str, key: str, why: str) -> None:
        """Delete a damaged entry, with a warning; the caller builds it again."""
        path = self._path(kind, key)
        log.warning("Persistent cache: entry %s is corrupt (%s); rebuilding it", path, why)
        self._count(kind, "corrupt")
        self._count(kind, "miss")
        try:
            path.unlink()
        except OSError:
            pass

    def write(self, kind: str, key: str, payload: bytes) -> None:
        """Store an entry: a temporary file in the entry's folder, then `os.replace`."""
        path = self._path(kind, key)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC)
                f.write(hashlib.blake2b(payload, digest_size=_DIGEST).digest())
                f.write(payload)
            os.replace(tmp, path)
            self._count(kind, "written")
        except OSError as e:  # a full or read-only disk slows later runs, never fails this one
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            if not self._write_failed:
                self._write_failed = True
                log.warning("Persistent cache: cannot write under %s (%s)", self.root, e)

    # ------------------------------------------------------------- size
    def entries(self) -> list[tuple[Path, int, float]]:
        """(path, bytes, last use) of every entry."""
        found = []
        for kind in KINDS:
            for dirpath, _, names in os.walk(self.root / kind):
                for name in names:
                    if name.startswith(_TMP_PREFIX):
                        continue
                    path = Path(dirpath) / name
                    try:
                        st = path.stat()
                    except OSError:  # removed by another job meanwhile
                        continue
                    found.append((path, st.st_size, st.st_mtime))
        return found

    def trim(self) -> int:
        """Remove the least recently used entries until the cache is under `max_bytes`."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = 0
        for path, size, _ in sorted(entries, key=lambda e: e[2]):
            if total <= self.max_bytes:
                break
            try:
                path.unlink()
            except OSError:
                continue
            total -= size
            removed += 1
        if removed:
            log.info(
                "Persistent cache: removed %d least recently used entries to stay under %.0f MB",
                removed,
                self.max_bytes / 2**20,
            )
        return removed

    def summary(self) -> dict[str, dict[str, int]]:
        """What this process reused and built, per kind: {kind: {hit, miss, written, corrupt}}."""
        return {kind: dict(counts) for kind, counts in self.stats.items() if counts}


def open_cache(speed: object | None) -> DiskCache | None:
    """The run's persistent cache from the `callbacks.speed` config (None = off)."""
    if speed is None or not getattr(speed, "persistent_cache", True):
        return None
    return DiskCache(
        getattr(speed, "persistent_cache_dir", None),
        float(getattr(speed, "persistent_cache_mb", 4096.0)),
    )


# ----------------------------------------------------------------- `thawkit cache`
def _show(cache: DiskCache) -> str:
    entries = cache.entries()
    lines = [f"thawkit cache: {cache.root}"]
    for kind in KINDS:
        mine = [size for path, size, _ in entries if path.relative_to(cache.root).parts[0] == kind]
        lines.append(f"  {kind:<9} {len(mine):>7} entries {sum(mine) / 2**20:>10.1f} MB")
    total = sum(size for _, size, _ in entries)
    lines.append(f"  {'total':<9} {len(entries):>7} entries {total / 2**20:>10.1f} MB")
    return "\n".join(lines)


def main(args: Sequence[str]) -> None:
    """`thawkit cache show|clear`: what the persistent cache holds, or empty it."""
    usage = (
        "usage: thawkit cache show|clear\n"
        "  show   where the persistent cache is ($THAWKIT_CACHE) and what it holds\n"
        "  clear  delete every entry (later runs build them again)"
    )
    if list(args) in (["-h"], ["--help"]):
        print(usage)
        return
    if len(args) != 1 or args[0] not in ("show", "clear"):
        print(f"thawkit cache: expected show or clear, got {' '.join(args) or 'nothing'}\n{usage}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    cache = DiskCache()
    if args[0] == "show":
        print(_show(cache))
        return
    size = sum(size for _, size, _ in cache.entries())
    for kind in KINDS:
        shutil.rmtree(cache.root / kind, ignore_errors=True)
    print(f"thawkit cache: cleared {size / 2**20:.1f} MB under {cache.root}")
