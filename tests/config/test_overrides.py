"""A mistyped key on the command line gets "did you mean", not Hydra's advice to add it with +."""

from __future__ import annotations

import pytest

import thawkit.config.overrides as overrides_mod
from thawkit.config.overrides import check_command_line
from train_cli import TINY, run_train


def message(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        check_command_line("train", list(args))
    assert done.value.code == 1
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model.lrr=1"], "model.lrr: no such key; did you mean model.lr?"),
        (["strategy=gradual", "sed=1"], "sed: no such key; did you mean seed?"),
        (["data.augment.hflp=0"], "did you mean data.augment.hflip"),
        (["trainer.max_epoch=3"], "did you mean trainer.max_epochs?"),
        # auto has no max_groups: the typo check follows the strategy chosen.
        (["strategy=auto", "strategy.max_group=2"], "strategy.max_group: no such key"),
        (["ema=true"], "ema=true: no such key any more; use ema=on"),
        (["ema_decay=0.99"], "ema_decay=0.99: no such key any more; use callbacks.ema.decay"),
    ],
)
def test_a_mistyped_key_names_the_close_keys(capsys, args: list[str], expected: str) -> None:
    text = message(capsys, *args)
    assert expected in text and "To append to your config" not in text, text


def test_every_mistyped_key_is_listed(capsys) -> None:
    text = message(capsys, "model.lrr=1", "model.head.kindd=mlp")
    assert "did you mean model.lr?" in text and "did you mean model.head.kind?" in text


def test_valid_command_lines_pass_through() -> None:
    for args in (
        [],
        ["strategy=gradual", "strategy.max_groups=4", "trainer.enable_progress_bar=false"],
        ["ema=on", "callbacks.ema.decay=0.99"],
        ["+trainer.accumulate_grad_batches=2"],  # a Trainer keyword the configs do not list
        ["model.lr=abc"],  # not a key problem: Hydra's own message
        ["-m", "seed=0,1"],
    ):
        check_command_line("train", args)


def test_train_py_with_a_typo_says_did_you_mean() -> None:
    done = run_train(*TINY, "model.lrr=1", timeout=120)
    assert done.returncode == 1
    assert "model.lrr: no such key; did you mean model.lr?" in done.stderr, done.stderr[-3000:]
    assert "+model.lrr" not in done.stderr


def test_removing_a_schema_key_says_to_set_it_to_null(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        check_command_line("train", ["~callbacks.views"])
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert "~callbacks.views" in err and "callbacks.views=null" in err


def test_null_turns_a_callback_off() -> None:
    check_command_line("train", ["callbacks.views=null", "callbacks.early_stopping=null"])


def test_keys_of_the_schema_need_no_composition(monkeypatch) -> None:
    calls: list[list[str]] = []

    def compose(config_name: str, overrides: list[str]) -> None:
        calls.append(list(overrides))

    monkeypatch.setattr(overrides_mod, "compose", compose)
    check_command_line(
        "train", ["strategy=gradual", "model.lr=0.01", "callbacks.views.samples=0", "seed=1"]
    )
    assert calls == []  # every key is a field of TrainSchema: nothing to compose
    # Below a node the schema types `Any` (Lightning's ModelCheckpoint) only the composed
    # config knows the keys.
    check_command_line("train", ["callbacks.model_checkpoint.monitor=val/loss"])
    assert calls == [["callbacks.model_checkpoint.monitor=val/loss"]]
