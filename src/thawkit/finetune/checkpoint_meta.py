"""What a thawkit checkpoint records beside the weights, under `checkpoint["thawkit"]`.

The frozen state (`trainable_since`, `lr_scale`) lets a resumed run train exactly the groups it
trained before; the backbone's preprocessing, the training image size and the data split let
predict and evaluate rebuild the inputs from the checkpoint alone (`thawkit.inference.predict`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHECKPOINT_KEY = "thawkit"
# Data module attributes a checkpoint records (evaluate re-creates the same split from them).
DATA_KEYS = ("val_fraction", "test_fraction", "seed")
# `exclude`: the files the run left out (data.exclude); evaluate leaves them out too.
DATA_PATHS = ("root", "digits_root", "exclude")


def data_meta(datamodule: Any) -> dict[str, Any]:
    """The training image size and data split of `datamodule`; empty without one."""
    if datamodule is None or not hasattr(datamodule, "image_size"):
        return {}
    data = {k: getattr(datamodule, k, None) for k in DATA_KEYS}
    for key in DATA_PATHS:  # absolute: evaluate may run from another folder
        path = getattr(datamodule, key, None)
        data[key] = str(Path(path).expanduser().resolve()) if path else None
    return {"image_size": int(datamodule.image_size), "data": data}


def drop_prefixed(state_dict: dict[str, Any], prefix: str) -> None:
    """Remove the entries under `prefix` (a submodule the loading module does not have)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]
