"""DDP for real: two CPU processes (gloo) train `strategy=gradual` with `imbalance=sampler`.

The training images carry their own index in the red channel, so each rank's probe callback
(tools/probes/ddp_probe.py) records exactly which samples it trained on.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import thawkit
from conftest import tiny_cfg
from thawkit.data import ImageFolderDataModule
from thawkit.models.backbone import resolve_preprocessing
from train_cli import TINY, check, run_train

COUNTS = (16, 8)  # imbalanced, and 24 = 2 ranks x 3 batches of 4: no padding in the shards
EPOCHS = 3


def index_images(root: Path) -> Path:
    """Train images whose red channel is 8 + 10 * index (index = the file name)."""
    index = 0
    for label, n in enumerate(COUNTS):
        for _ in range(n):
            arr = np.zeros((32, 32, 3), np.uint8)
            arr[..., 0], arr[..., 1], arr[..., 2] = 8 + 10 * index, 60 + 120 * label, 100
            path = root / "train" / f"c{label}" / f"{index:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
            index += 1
        for k in range(4):
            arr = np.full((32, 32, 3), (30 * k, 60 + 120 * label, 100), np.uint8)
            path = root / "val" / f"c{label}" / f"v{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
    return root


def one_draw(root: Path, epoch: int) -> Counter:
    """The single-process draw of the weighted sampler in `epoch`, as image indices."""
    dm = ImageFolderDataModule(
        str(root),
        preprocessing=resolve_preprocessing("test_efficientnet"),
        image_size=32,
        batch_size=4,
        num_workers=0,
        seed=0,
        imbalance={"mode": "sampler"},
        augment={"name": "none"},
    )
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    sampler.set_epoch(epoch)
    # The loader's sampler yields (index, augmentation seed) pairs (thawkit.seeding).
    return Counter(int(Path(dm.splits["train"][i][0]).stem) for i, _ in sampler)


def test_two_process_gradual_with_sampler(tmp_path: Path) -> None:
    images = index_images(tmp_path / "images")
    probe, run_dir = tmp_path / "probe", tmp_path / "run"
    check(
        run_train(
            *TINY,
            "trainer=ddp_cpu",
            "strategy=gradual",
            "imbalance=sampler",
            "augment=none",
            f"data.root={images}",
            "data.batch_size=4",
            f"trainer.max_epochs={EPOCHS}",
            "callbacks.early_stopping=null",
            "+callbacks.probe._target_=ddp_probe.DDPProbe",
            f"+callbacks.probe.out_dir={probe}",
            f"hydra.run.dir={run_dir}",
        )
    )
    ranks = [torch.load(probe / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["strategy"] == "FreezeAwareDDPStrategy"

    # Gradual unfreezing happened after DDP wrapped the model: stage_5 at epoch 1, stage_4 at 2.
    since = ranks[0]["trainable_since"]
    assert since["stage_5"] == 3 and since["stage_4"] == 6 and since["stage_3"] is None
    start, end = ranks[0]["start"], ranks[0]["end"]
    for group, keys in ranks[0]["groups"].items():
        changed = [k for k in keys if not torch.equal(start[k], end[k])]
        if since[group] is None:
            assert not changed, f"frozen {group} changed: {changed}"
        else:
            assert len(changed) == len(keys), f"unfrozen {group}: only {changed} trained"

    # Every rank ends with bitwise-identical weights and buffers.
    differ = [k for k in end if not torch.equal(end[k], ranks[1]["end"][k])]
    assert not differ, f"ranks drifted apart in {len(differ)} tensors, e.g. {differ[:3]}"

    # Each epoch, the ranks train on disjoint halves that together are one weighted draw.
    for epoch in range(EPOCHS):
        seen = [[(red - 8) // 10 for red in r["seen"][epoch]] for r in ranks]
        assert len(seen[0]) == len(seen[1]) == sum(COUNTS) // 2
        assert Counter(seen[0]) + Counter(seen[1]) == one_draw(images, epoch), epoch
        assert sorted(seen[0]) != sorted(seen[1])
    assert one_draw(images, 0) != one_draw(images, 1)  # a new draw every epoch

    # Validation metrics are synchronised: both ranks computed the same numbers.
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    assert set(ranks[0]["metrics"][EPOCHS - 1]) >= {"val/loss", "val/acc"}

    # Only rank 0 writes the run's records; rank 1 only logs.
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["history"]) == EPOCHS and summary["strategy"] == "gradual"
    assert json.loads((run_dir / "result.json").read_text())["status"] == "completed"
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert not (run_dir / ".hydra" / "hydra.yaml").read_text().count("train_ddp_process")


def test_plain_ddp_is_refused(make_cfg) -> None:
    from thawkit.run.train import build

    cfg = make_cfg(
        "trainer=ddp_cpu", "trainer.strategy._target_=lightning.pytorch.strategies.DDPStrategy"
    )
    with pytest.raises(ValueError, match="trainer=ddp_cpu"):
        build(cfg)


def test_only_multirun_ddp_jobs_move_into_their_own_process(tmp_path: Path) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    from thawkit.run import job

    def configure(*overrides: str):
        cfg = tiny_cfg(tmp_path, overrides)
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = str(tmp_path / "job")
        HydraConfig.instance().set_config(cfg)
        return cfg

    try:
        assert not job.needs_own_process(configure("trainer=ddp_cpu"))  # a single run
        assert job.needs_own_process(configure("trainer=ddp_cpu", "hydra.mode=MULTIRUN"))
        assert not job.needs_own_process(configure("trainer=cpu", "hydra.mode=MULTIRUN"))
        assert not job.needs_own_process(
            configure("trainer=ddp_cpu", "trainer.devices=1", "hydra.mode=MULTIRUN")
        )

        cfg = configure("trainer=ddp_cpu", "strategy=gradual", "hydra.mode=MULTIRUN")
        command = job.child_command(HydraConfig.get())
        assert command[1:3] == ["-m", "thawkit.run.entry"]
        assert command[3] == f"--config-path={thawkit.CONF_DIR}"
        assert command[4] == "--config-name=train"
        assert command[5:7] == ["trainer=ddp_cpu", "strategy=gradual"]  # the job's own overrides
        assert command[7:] == [
            f'hydra.run.dir="{tmp_path / "job"}"',
            "hydra.output_subdir=null",
            "hydra.mode=RUN",
            "hydra.job.name=train",
        ]
        assert cfg.trainer.devices == 2
    finally:
        HydraConfig.instance().cfg = None
