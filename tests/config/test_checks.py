"""Config validation: every bad name, range and key is an error naming the key, before any data.

Composes the real config (tests/conftest.py `tiny_cfg`) with the bad override, then checks
`thawkit.config.checks.validate` (or Hydra, for what Hydra itself rejects).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from conftest import tiny_cfg
from thawkit.config.checks import ConfigError, validate
from thawkit.models.backbone import build_backbone, layer_group_names
from thawkit.run.train import build


def invalid(tmp_path: Path, *overrides: str) -> str:
    cfg = tiny_cfg(tmp_path, list(overrides))
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    return str(error.value)


# (overrides, what the message must contain: the key, and the allowed values or range)
CASES = {
    "unknown backbone": (["model.backbone=resnet19"], ["model.backbone='resnet19'", "resnet18"]),
    "unknown scheduler": (["scheduler.name=cosin"], ["scheduler.name='cosin'", "'cosine'"]),
    "unknown augment": (["data.augment.name=strng"], ["data.augment.name='strng'", "'strong'"]),
    "unknown mix": (
        ["mix=mixup", "data.mix.mode=mixupp"],
        ["data.mix.mode='mixupp'", "'mixup_cutmix'"],
    ),
    "unknown imbalance": (
        ["data.imbalance.mode=oversample"],
        ["data.imbalance.mode='oversample'", "'sampler'"],
    ),
    "lr zero": (["model.lr=0"], ["model.lr=0", "allowed > 0"]),
    "lr negative": (["model.lr=-0.001"], ["model.lr=-0.001", "allowed > 0"]),
    "decay zero": (["model.lr_decay=0"], ["model.lr_decay=0", "(0, 1]"]),
    "decay above one": (["model.lr_decay=1.5"], ["model.lr_decay=1.5", "(0, 1]"]),
    "k above groups": (
        ["strategy=partial", "strategy.initial_groups=99"],
        ["strategy.initial_groups=99", "allowed 0..6", "stage_5"],
    ),
    "max groups above groups": (
        ["strategy=gradual", "strategy.max_groups=8"],
        ["strategy.max_groups=8", "allowed 0..6"],
    ),
    "negative mixup alpha": (
        ["mix=mixup", "data.mix.mixup_alpha=-0.2"],
        ["data.mix.mixup_alpha=-0.2", "allowed > 0"],
    ),
    "negative cutmix alpha": (
        ["mix=cutmix", "data.mix.cutmix_alpha=-1"],
        ["data.mix.cutmix_alpha=-1", "allowed > 0"],
    ),
    "batch size zero": (["data.batch_size=0"], ["data.batch_size=0", "allowed >= 1"]),
    "unfreeze interval zero": (
        ["strategy=gradual", "strategy.every_n_epochs=0"],
        ["strategy.every_n_epochs=0", "allowed >= 1"],
    ),
    "typo in a key": (["+model.lrr=0.1"], ["model.lrr: unknown key", "did you mean 'lr'"]),
    "typo in a top-level key": (["+sed=1"], ["sed: unknown key", "did you mean 'seed'"]),
    "typo in an augment knob": (["+data.augment.hflp=0"], ["data.augment.hflp", "'hflip'"]),
    "typo in a trainer key": (["+trainer.max_epoch=3"], ["trainer.max_epoch", "'max_epochs'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_config_names_the_key(case: str, tmp_path: Path) -> None:
    overrides, expected = CASES[case]
    message = invalid(tmp_path, *overrides)
    for text in expected:
        assert text in message, (text, message)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    message = invalid(tmp_path, "model.lr=0", "data.batch_size=0", "+model.lrr=1")
    assert "3 problem(s)" in message
    assert all(k in message for k in ("model.lr=0", "data.batch_size=0", "model.lrr"))


def test_validation_comes_before_any_data_is_read(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, ["model.lr=-1"], data_root=tmp_path / "no such folder")
    with pytest.raises(ConfigError, match="model.lr=-1"):
        build(cfg)


def test_valid_configs_pass(tmp_path: Path) -> None:
    for overrides in (
        [],
        ["strategy=partial", "strategy.initial_groups=6"],
        ["strategy=full", "mix=mixup_cutmix", "imbalance=both", "augment=strong"],
        ["scheduler=onecycle", "optimizer=sgd", "model.lr_decay=1.0"],
    ):
        validate(tiny_cfg(tmp_path, overrides))
    # Counted on the meta device, the same groups as the real backbone's.
    real = [g.name for g in build_backbone("test_efficientnet", "none").groups]
    assert layer_group_names("test_efficientnet") == real and len(real) == 6


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("strategy=gradul", ["strategy/gradul", "gradual", "two_phase"]),
        ("scheduler=cosin", ["scheduler/cosin", "cosine"]),
        ("augment=strng", ["augment/strng", "strong"]),
        ("mix=mixupp", ["mix/mixupp", "mixup_cutmix"]),
        ("imbalance=oversample", ["imbalance/oversample", "sampler"]),
    ],
)
def test_hydra_lists_the_options_of_a_config_group(override: str, expected: list[str]) -> None:
    with pytest.raises(MissingConfigException) as error:
        tiny_cfg(Path("/nonexistent"), [override])
    for text in expected:
        assert text in str(error.value)


def test_hydra_rejects_an_unknown_key_on_the_command_line() -> None:
    with pytest.raises(ConfigCompositionException) as error:
        tiny_cfg(Path("/nonexistent"), ["model.lrr=0.1"])
    assert "model.lrr" in str(error.value) and "+model.lrr" in str(error.value)
