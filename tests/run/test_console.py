"""What `python train.py` prints: the data and layer tables, a line per epoch, one result block.

The run's stdout is a pipe here (as in a log file or CI): no live progress bar, none of
Lightning's banner, advertisement or upstream deprecation warnings, and a result block whose
commands work when pasted.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import make_image_folder
from thawkit.console import LIGHTNING_NOISE, DropMessages, quiet_lightning
from thawkit.run.console import command, result_block
from thawkit.run.progress import EpochBars, EpochLines, progress_bar
from train_cli import REPO, TINY, check, run_train

NOISE = [
    "GPU available",
    "TPU available",
    "litlogger",
    "Tip:",
    "Loading `train_dataloader` to estimate number of stepping batches",
    'ckpt_path="best"',
    "LeafSpec",
    "Restoring states from the checkpoint",
    "━",  # a live bar's frames
]

# The tiny run with the default progress display (TINY switches it off for other tests).
WITH_PROGRESS = [
    a for a in TINY if a not in ("trainer.enable_progress_bar=false", "callbacks.progress_bar=null")
]


def test_a_run_piped_to_a_file_prints_what_matters(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", (12, 12), ("train", "val", "test"))
    run_dir = tmp_path / "run"
    done = check(run_train(*WITH_PROGRESS, f"data.root={data}", f"hydra.run.dir={run_dir}"))
    out = done.stdout + done.stderr
    for noise in NOISE:
        assert noise not in out, f"{noise!r} printed:\n{out}"
    lines = out.splitlines()
    assert any(line.startswith("class_0") for line in lines)  # the data table
    assert any(line.startswith("head ") for line in lines)  # the layer-group table
    for epoch in (1, 2):
        (line,) = [x for x in lines if f"Epoch {epoch}/2 " in x]
        assert "train/loss" in line and "val/acc" in line
    assert out.count("Result\n") == 1 and out.count("diagnosis ") == 1
    block = out[out.index("Result\n") :]
    assert "  best      epoch " in block and "  test      " in block and "test/acc" in block
    assert f"  run dir   {run_dir}\n" in block
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    assert f"tensorboard --logdir {run_dir / 'tensorboard'}\n" in block
    predict = f"python {REPO / 'predict.py'} ckpt={ckpt} input=IMAGE_OR_FOLDER"
    assert predict in block
    assert f"python {REPO / 'export.py'} ckpt={ckpt} format=onnx" in block
    assert (run_dir / "train.log").read_text().count("Result\n") == 1

    # The predict command works as printed (python = this interpreter).
    pasted = shlex.split(predict.replace("IMAGE_OR_FOLDER", str(data / "test")))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]))
    predicted = subprocess.run(
        [sys.executable, *pasted[1:], f"output={tmp_path / 'preds.csv'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert (tmp_path / "preds.csv").is_file()


def test_commands_are_spelled_the_way_the_run_was_started() -> None:
    assert command("predict", "train.py", "") == ["python", "predict.py"]
    assert command("export", "/repo/train.py", "") == ["python", "/repo/export.py"]
    assert command("predict", "/venv/bin/thawkit", "") == ["thawkit", "predict"]
    assert command("predict", "/x/cli.py", "thawkit.cli") == [
        "python", "-m", "thawkit.cli", "predict",
    ]  # fmt: skip


def test_result_block_without_a_checkpoint_offers_no_predict_command(tmp_path: Path) -> None:
    summary = {"best": {"epoch": 3, "val/acc": 0.9}, "diagnosis": "good fit"}
    block = result_block(tmp_path, summary, "train.py")
    assert "epoch 3: val/acc 0.9000" in block and "diagnosis good fit" in block
    assert "tensorboard --logdir" in block and "predict" not in block


def test_progress_display_follows_the_terminal() -> None:
    assert isinstance(progress_bar(terminal=True), EpochBars)
    assert isinstance(progress_bar(terminal=False), EpochLines)


def test_only_the_listed_lightning_messages_are_dropped(caplog) -> None:
    quiet_lightning()
    quiet_lightning()  # idempotent: one filter
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert sum(isinstance(f, DropMessages) for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=logger.name):
        for prefix in LIGHTNING_NOISE:
            logger.info(prefix + "something")
        logger.info("`Trainer.fit` stopped: `max_epochs=2` reached.")
        logger.info("Restored all states from the checkpoint at x.ckpt")
    assert [r.getMessage() for r in caplog.records] == [
        "`Trainer.fit` stopped: `max_epochs=2` reached.",
        "Restored all states from the checkpoint at x.ckpt",
    ]
