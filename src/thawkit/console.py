"""What a thawkit command prints: logger levels, and Lightning's chatter left out.

`quiet_lightning` drops, by their exact text, the messages Lightning prints on every run that
tell a thawkit user nothing: the accelerator banner, an advertisement, the batches it loads to
count steps, checkpoint-restore chatter around the test pass, and an upstream deprecation
warning (Lightning's `_pytree.py` using torch's deprecated `LeafSpec`) that only a Lightning
release can fix. Every other message and warning still shows.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Lightning's rank_zero_info goes through one of these loggers (the last one imported wins).
LIGHTNING_INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)

# Start of each message left out, and why.
LIGHTNING_NOISE = (
    "GPU available: ",  # the accelerator banner (a GPU left unused still warns)
    "TPU available: ",
    "HPU available: ",
    "LOCAL_RANK: ",  # "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]"
    "💡 Tip: ",  # an advertisement for a cloud logger
    "Loading `train_dataloader` to estimate number of stepping batches",  # for the LR schedule
    "Restoring states from the checkpoint path at ",  # the test pass loading best.ckpt
    "Loaded model weights from the checkpoint at ",  # (a resume still says "Restored all ...")
)

# Warnings left out: (message regex, category).
WARNING_NOISE = ((re.escape("`isinstance(treespec, LeafSpec)` is deprecated"), FutureWarning),)


class DropMessages(logging.Filter):
    """A logging filter that drops records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


_LIGHTNING_FILTER = DropMessages(LIGHTNING_NOISE)


def quiet_lightning() -> None:
    """Leave Lightning's noise (above) out of what this process prints; idempotent."""
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if _LIGHTNING_FILTER not in logger.filters:
            logger.addFilter(_LIGHTNING_FILTER)
    for message, category in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the named loggers to WARNING while the block runs."""
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
