"""Feature cache: exactness against the full forward, cache keys, when it turns itself off."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from thawkit.data.feature_cache import FeatureCache
from thawkit.data.feature_loader import SwitchingLoader
from thawkit.data.feature_store import cache_key, files_digest, is_random, module_digest
from thawkit.data.transforms import eval_transform, train_transform
from thawkit.models.backbone import resolve_preprocessing
from thawkit.run.speed import SpeedOptions
from thawkit.run.train import build

FAST = ("callbacks.speed.channels_last=false", "callbacks.speed.image_cache_mb=0")


def _fit(cfg, speed: SpeedOptions | None = None):
    datamodule, model, trainer = build(cfg)
    if speed is not None:  # swap in a given SpeedOptions (to inspect or reuse its cache)
        trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, SpeedOptions)]
        trainer.callbacks.append(speed)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return model, trainer


def _speed(trainer) -> SpeedOptions:
    return next(c for c in trainer.callbacks if isinstance(c, SpeedOptions))


def _extracted(trainer, split: str) -> list[int]:
    return [e["view"] for e in _speed(trainer).features.extractions if e["split"] == split]


@pytest.mark.parametrize("strategy", ["feature_extraction", "two_phase", "mid_epoch_val"])
def test_head_on_cached_features_equals_full_forward(make_cfg, strategy: str) -> None:
    """No augmentation, fixed seed: the head trained on cached features equals the head trained
    with the full forward pass (and two_phase then continues identically on images)."""
    common = ("augment=none", "trainer.max_epochs=3", *FAST)
    if strategy == "mid_epoch_val":  # validations inside the epochs, on features too
        common += ("strategy=feature_extraction", "+trainer.val_check_interval=0.5")
    else:
        common += (f"strategy={strategy}",)
    if strategy == "two_phase":
        # SGD: Adam's normalised steps turn 1e-9 gradient noise on near-zero BatchNorm biases
        # into full-LR steps of either sign, which would hide what this test compares.
        common += ("strategy.every_n_epochs=2", "optimizer=sgd")
    cached, t_cached = _fit(make_cfg(*common, "callbacks.speed.feature_cache=true"))
    full, _ = _fit(make_cfg(*common, "callbacks.speed.feature_cache=false"))
    assert _extracted(t_cached, "train") == [0]  # computed once, reused by later epochs
    assert _extracted(t_cached, "val") == [0]
    heads = zip(cached.head.state_dict().items(), full.head.state_dict().values(), strict=True)
    for (name, a), b in heads:
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (name, (a - b).abs().max())
    for a, b in zip(cached.backbone.parameters(), full.backbone.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    if strategy == "two_phase":  # the backbone did train in epoch 2, on images
        assert cached.num_trainable_groups == len(cached.backbone.groups)


def test_augmented_views_are_cached_lazily_and_reused(make_cfg) -> None:
    cfg = make_cfg(
        "strategy=feature_extraction", "augment=basic", "trainer.max_epochs=3",
        "callbacks.speed.feature_views=2", *FAST,
    )  # fmt: skip
    _, trainer = _fit(cfg)
    assert _extracted(trainer, "train") == [0, 1]  # epoch 2 reuses view 0
    assert _extracted(trainer, "val") == [0]


def test_views_zero_turns_caching_off_with_augmentation(make_cfg, caplog) -> None:
    cfg = make_cfg(
        "strategy=feature_extraction", "augment=basic", "callbacks.speed.feature_views=0", *FAST
    )
    with caplog.at_level(logging.INFO, logger="thawkit.data.feature_cache"):
        _, trainer = _fit(cfg)
    assert _extracted(trainer, "train") == []
    assert _extracted(trainer, "val") == [0]  # evaluation has no augmentation: still cached
    assert "off while augmentation is on" in caplog.text


def test_mixing_turns_caching_off_for_training(make_cfg, caplog) -> None:
    cfg = make_cfg("strategy=feature_extraction", "augment=none", "mix=mixup", *FAST)
    with caplog.at_level(logging.INFO, logger="thawkit.data.feature_cache"):
        _, trainer = _fit(cfg)
    assert _extracted(trainer, "train") == []
    assert "Mixup/CutMix" in caplog.text


def test_bn_policy_none_turns_caching_off(make_cfg, caplog) -> None:
    cfg = make_cfg("strategy=feature_extraction", "augment=none", "model.bn_policy=none", *FAST)
    with caplog.at_level(logging.INFO, logger="thawkit.data.feature_cache"):
        _, trainer = _fit(cfg)
    assert _speed(trainer).features.extractions == []
    assert "bn_policy=none" in caplog.text


def test_stochastic_backbone_turns_caching_off(make_cfg, caplog) -> None:
    datamodule, model, trainer = build(make_cfg("strategy=feature_extraction", "augment=none"))
    # Dropout inside the backbone: its training forward is not its evaluation forward.
    model.backbone.model.global_pool = nn.Sequential(model.backbone.model.global_pool,
                                                     nn.Dropout(0.5))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="thawkit.data.feature_cache"):
        trainer.fit(model, datamodule=datamodule)
    assert _speed(trainer).features.extractions == []
    assert "dropout or stochastic depth" in caplog.text


def test_resume_at_the_unfreeze_epoch_trains_on_images(make_cfg, tmp_path: Path) -> None:
    common = ("strategy=two_phase", "strategy.every_n_epochs=2", "augment=none", *FAST)
    _fit(make_cfg(*common, "trainer.max_epochs=2"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    model, trainer = _fit(make_cfg(*common, "trainer.max_epochs=3", f"ckpt_path={last}"))
    assert model.num_trainable_groups == len(model.backbone.groups)
    assert _extracted(trainer, "train") == []  # the resumed epoch trains the backbone


def test_source_follows_the_schedule_with_loaders_reloaded_every_epoch(make_cfg) -> None:
    cfg = make_cfg("strategy=two_phase", "strategy.every_n_epochs=2", "augment=none",
                   "trainer.max_epochs=3", "+trainer.reload_dataloaders_every_n_epochs=1",
                   *FAST)  # fmt: skip
    model, trainer = _fit(cfg)  # features at the unfreeze epoch would raise in forward
    assert model.num_trainable_groups == len(model.backbone.groups)
    assert _extracted(trainer, "train") == [0]


def test_cache_is_reused_only_when_the_key_matches(make_cfg) -> None:
    speed = SpeedOptions(channels_last=False, image_cache_mb=0)
    cfg = make_cfg("strategy=feature_extraction", "augment=none", "trainer.max_epochs=1")
    model, _ = _fit(cfg, speed)
    assert len(speed.features.extractions) == 2  # train and val
    # Same backbone state, same data: reused.
    datamodule, _, trainer = build(cfg)
    same = type(model)(**model.hparams)
    same.backbone.load_state_dict(model.backbone.state_dict())
    trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, SpeedOptions)]
    trainer.callbacks.append(speed)
    trainer.fit(same, datamodule=datamodule)
    assert len(speed.features.extractions) == 2
    # Other backbone weights: recomputed, never reused.
    other, _ = _fit(make_cfg("strategy=feature_extraction", "augment=none",
                             "trainer.max_epochs=1", "seed=1"), speed)  # fmt: skip
    assert len(speed.features.extractions) == 4


def test_features_on_disk_are_reused_by_a_later_run(make_cfg, tmp_path: Path) -> None:
    common = ("strategy=feature_extraction", "augment=none", "trainer.max_epochs=1", *FAST,
              f"callbacks.speed.feature_cache_dir={tmp_path / 'features'}")  # fmt: skip
    _, first = _fit(make_cfg(*common))
    assert len(_speed(first).features.extractions) == 2
    assert len(list((tmp_path / "features").glob("*.pt"))) == 2
    _, second = _fit(make_cfg(*common))
    assert _speed(second).features.extractions == []


def test_cache_key_changes_with_backbone_weights_transform_and_files(
    make_cfg, image_folder: Path
) -> None:
    datamodule, model, _ = build(make_cfg())
    samples = datamodule.splits["train"]
    pre = resolve_preprocessing("test_efficientnet")

    def key(**change):
        parts = dict(backbone="test_efficientnet", weights="none",
                     state=module_digest(model.backbone), transform=repr(eval_transform(pre, 32)),
                     files=files_digest(samples))  # fmt: skip
        parts.update(change)
        return cache_key(**parts)

    base = key()
    assert key() == base
    assert key(backbone="resnet18") != base
    assert key(weights="imagenet") != base
    assert key(transform=repr(eval_transform(pre, 48))) != base
    assert key(transform=repr(train_transform(pre, 32))) != base
    assert key(files=files_digest(samples[:-1])) != base
    with torch.no_grad():
        next(model.backbone.parameters()).add_(1e-3)
    assert key() != base
    before = files_digest(samples)
    path = samples[0][0]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert files_digest(samples) != before


def test_buffers_change_the_digest(make_cfg) -> None:
    _, model, _ = build(make_cfg())
    before = module_digest(model.backbone)
    with torch.no_grad():
        model.backbone.groups[0].norms[0].running_var.mul_(2)
    assert module_digest(model.backbone) != before


def test_is_random() -> None:
    pre = resolve_preprocessing("test_efficientnet")
    assert not is_random(eval_transform(pre, 32))
    assert not is_random(train_transform(pre, 32, name="none"))
    assert is_random(train_transform(pre, 32))


def test_switching_loader_is_a_dataloader_outside_fit(make_cfg) -> None:
    datamodule, _, _ = build(make_cfg())
    cache = FeatureCache()
    datamodule.feature_source = cache
    loader = datamodule.train_dataloader()
    assert isinstance(loader, SwitchingLoader)
    assert len(loader) == len(loader.loader) and loader.batch_size == datamodule.batch_size
    x, _ = next(iter(loader))  # no fit running: images
    assert x.ndim == 4


def test_module_refuses_features_while_the_backbone_trains(make_cfg) -> None:
    _, model, _ = build(make_cfg("strategy=full"))
    model.set_trainable_groups(-1)
    with pytest.raises(RuntimeError, match="frozen backbone"):
        model(torch.zeros(2, model.backbone.num_features))


@pytest.mark.slow
def test_real_backbone_on_photos_cached_head_equals_full_forward(tmp_path: Path) -> None:
    """The bundled EfficientNet-Lite0 (BatchNormAct2d, its own preprocessing) on the hymenoptera
    photos at 96 px, 2 epochs of feature extraction: cached and full-forward heads agree."""
    from conftest import hymenoptera_root, tiny_cfg

    root = hymenoptera_root()
    if root is None:
        pytest.skip("../shared/data/hymenoptera is not there (set THAWKIT_HYMENOPTERA)")
    common = [
        "strategy=feature_extraction", "augment=none", "model.backbone=tf_efficientnet_lite0",
        "model.weights=bundled", "data.image_size=96", "data.batch_size=32", *FAST,
    ]  # fmt: skip
    heads = []
    for on in ("true", "false"):
        cfg = tiny_cfg(tmp_path / on, [*common, f"callbacks.speed.feature_cache={on}"], root)
        model, trainer = _fit(cfg)
        heads.append(model.head.state_dict())
        if on == "true":
            assert _extracted(trainer, "train") == [0]
    for name, a in heads[0].items():
        assert torch.allclose(a, heads[1][name], atol=1e-5, rtol=0), name


def test_cache_keys_take_a_non_utf8_file_name(tmp_path: Path) -> None:

    from thawkit.data.feature_store import cache_key, files_digest

    odd = tmp_path / os.fsdecode(b"bad\xff.png")
    odd.write_bytes(b"x")
    other = tmp_path / os.fsdecode(b"bad\xfe.png")
    other.write_bytes(b"x")
    assert files_digest([(str(odd), 0)]) != files_digest([(str(other), 0)])
    assert len(cache_key(files=str(odd))) == 40


def test_features_beyond_the_budget_are_read_from_a_file_with_the_same_training(
    make_cfg, tmp_path: Path
) -> None:
    """feature_cache_mb=0 writes every split's features to a file in the run dir: the head, the
    logits and the metrics are those of features held in memory, whether the rows were
    extracted now or read back from the persistent cache, and the file is gone after fit."""
    common = ("strategy=feature_extraction", "augment=none", "trainer.max_epochs=2", *FAST)
    in_memory, t_memory = _fit(make_cfg(*common))  # fills the persistent cache too
    spilled_read_back, t_read_back = _fit(make_cfg(*common, "callbacks.speed.feature_cache_mb=0"))
    spilled, t_spilled = _fit(
        make_cfg(
            *common, "callbacks.speed.feature_cache_mb=0", "callbacks.speed.persistent_cache=false"
        )
    )
    assert [e["spilled"] for e in _speed(t_memory).features.extractions] == [False, False]
    assert [e["spilled"] for e in _speed(t_spilled).features.extractions] == [True, True]
    assert _speed(t_read_back).features.extractions == []  # every row came from the disk cache
    assert _speed(t_read_back).features.num_reused > 0
    x = torch.randn(3, in_memory.backbone.num_features)
    for model, trainer in ((spilled_read_back, t_read_back), (spilled, t_spilled)):
        for (name, a), b in zip(
            in_memory.head.state_dict().items(), model.head.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name
        assert torch.equal(in_memory.head(x), model.head(x))
        for metric in ("val/acc", "val/loss", "train/loss"):
            assert float(trainer.callback_metrics[metric]) == float(
                t_memory.callback_metrics[metric]
            ), metric
        assert not list(Path(trainer.default_root_dir).rglob("feature-spill-*"))


def test_spilled_rows_read_back_exactly_in_any_order(tmp_path: Path) -> None:
    """Rows written past a budget are the rows given, whichever order they are read in, and
    rows read back from the persistent cache are merged into the dataset's order."""
    from thawkit.data.feature_rows import in_dataset_order
    from thawkit.data.feature_store import FeatureStore, SpilledRows, rows_tensor

    rows = torch.randn(10, 4)
    store = FeatureStore(budget_mb=3 * 4 * 4 / 2**20, spill_root=tmp_path)  # room for 3 rows
    writer = store.writer("k")
    for part in rows.split(2):  # the first batch fits, the second goes beyond the budget
        writer.add(part)
    items = writer.finish(torch.arange(10))
    assert isinstance(items, SpilledRows) and store.dataset("k") is items
    assert store.memory_bytes == 0
    for i in (9, 0, 4, 4, 7):
        row, label = items[i]
        assert torch.equal(row, rows[i]) and int(label) == i
    assert torch.equal(rows_tensor(items), rows)
    with pytest.raises(IndexError):
        items._read(10)
    spill_dir = writer.path.parent
    store.close()
    assert not spill_dir.exists() and store.dataset("k") is None
    # Rows 1, 4 and 8 read back from the cache; the others come fresh, in batches of 3.
    ids = [f"f{i}" for i in range(10)]
    kept = {ids[i]: rows[i] for i in (1, 4, 8)}
    todo = [i for i in range(10) if ids[i] not in kept]
    fresh = [(rows[todo[j : j + 3]], torch.zeros(0)) for j in range(0, len(todo), 3)]
    merged = torch.cat(list(in_dataset_order(ids, kept, todo, fresh, chunk=4)))
    assert torch.equal(merged, rows)
