"""The default dataset: scikit-learn's handwritten digits exported once to an ImageFolder.

1,797 real 8x8 scans, split 70/15/15 stratified with a fixed seed, written as PNGs under
`<root>/{train,val,test}/<digit>/`. Written to a temporary folder and renamed into place, so an
interrupted export never leaves a half-written dataset; a later run reuses the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path(os.environ.get("THAWKIT_DATA", "~/.cache/thawkit")).expanduser() / "digits"
_MARKER = ".thawkit-digits-v1"


def export_digits(root: str | Path = DEFAULT_ROOT, seed: int = 0) -> Path:
    """Export scikit-learn's digits to `root` as an ImageFolder with train/val/test splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    root = Path(root).expanduser()
    if (root / _MARKER).exists():
        return root
    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    idx = np.arange(len(images))
    train, rest = train_test_split(idx, test_size=0.3, stratify=digits.target, random_state=seed)
    val, test = train_test_split(
        rest, test_size=0.5, stratify=digits.target[rest], random_state=seed
    )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=root.parent))
    for split, ids in (("train", train), ("val", val), ("test", test)):
        for i in ids:
            folder = tmp / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")
    publish(tmp, root, _MARKER, "scikit-learn digits, 70/15/15 stratified split\n")
    log.info("Exported scikit-learn digits to %s", root)
    return root


def publish(tmp: Path, root: Path, marker: str, description: str) -> None:
    """Move the fully written folder `tmp` to `root`, marked complete by the file `marker`.

    Safe when several processes export at once (the first to finish wins, the others drop
    their copy); a half-written `root` left by an interrupted export is replaced.
    """
    (tmp / marker).write_text(description)
    if (root / marker).exists():  # another process finished first
        shutil.rmtree(tmp)
        return
    if root.exists():  # a half-written folder from an older interrupted export
        shutil.rmtree(root)
    try:
        os.replace(tmp, root)
    except OSError:
        if not (root / marker).exists():
            raise
        shutil.rmtree(tmp)
