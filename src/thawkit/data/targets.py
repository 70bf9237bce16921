"""Domain adaptation's data: the target-domain folders and the batch that carries them.

`da.target_root` is a folder of unlabelled target images (nested folders allowed, their names
ignored); `da.target_val_root` holds labelled target images in class folders named as the
training classes. A training step then gets a `DomainBatch`; the losses that use it live in
`thawkit.transfer.domain`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from thawkit.data import folder
from thawkit.data.file_policy import log_skipped

log = logging.getLogger(__name__)


class DomainBatch(NamedTuple):
    """A training batch with target images: (source images, source targets, target images).

    `batch[0]`, `batch[1]` are the source batch, as in a plain (x, y) batch, so callbacks that
    look at the training images (samples view, throughput) see the labelled ones.
    """

    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor


def _unreadable(paths: list[str], check_images: bool) -> dict[str, str]:
    """Target images that cannot be read (skipped with a warning; none when not checking)."""
    bad = folder.find_bad_images(paths) if check_images else {}
    for p, why in bad.items():
        log.warning("Skipping unreadable target image %s (%s)", p, why)
    return bad


def unlabelled_targets(target_root: str, check_images: bool = True) -> list[folder.Sample]:
    """The readable images under `target_root`, as samples of label -1 (unlabelled)."""
    root = Path(target_root).expanduser()
    if not root.is_dir():
        raise folder.DataError(
            f"da.target_root={root} is not a folder. Point it at a folder of target-"
            "domain images (the shifted digits: python -m thawkit.data.shifted_digits)."
        )
    ignored: dict[str, str] = {}
    paths = [str(p) for p in folder.image_files(root, ignored)]
    log_skipped(ignored)
    bad = _unreadable(paths, check_images)
    paths = [p for p in paths if p not in bad]
    if not paths:
        raise folder.DataError(
            f"da.target_root={root} holds no readable images "
            f"({', '.join(folder.IMG_EXTENSIONS)}). Add target-domain images to it."
        )
    log.info("Domain adaptation: %d unlabelled target images in %s", len(paths), root)
    return [(p, -1) for p in paths]


def labelled_targets(
    target_val_root: str, class_names: Sequence[str], check_images: bool = True
) -> list[folder.Sample]:
    """The readable images of `target_val_root`'s class folders, labelled as the source's."""
    root = Path(target_val_root).expanduser()
    if not root.is_dir():
        raise folder.DataError(
            f"da.target_val_root={root} is not a folder. Point it at labelled target "
            "images in class folders named as the training classes, or set it to null."
        )
    _, samples = folder.read_split(root, class_names)
    bad = _unreadable([p for p, _ in samples], check_images)
    samples = [s for s in samples if s[0] not in bad]
    log.info("Domain adaptation: %d labelled target images in %s", len(samples), root)
    return samples
