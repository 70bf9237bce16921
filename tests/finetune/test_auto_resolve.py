"""strategy=auto's config side: where the chosen strategy's file is read from (Hydra's search
path, or the packaged configs without Hydra), the public target, and the run entry's checks of
what auto wrote."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object, instantiate

from conftest import tiny_cfg
from thawkit import CONF_DIR
from thawkit.config.checks import ConfigError
from thawkit.config.schema import AutoSchema, load_option
from thawkit.finetune import auto
from thawkit.finetune.auto import AutoStrategy, Signals, config_roots, strategy_config
from thawkit.finetune.auto import resolve as auto_resolve
from thawkit.models.backbone import resolve_preprocessing

# 20 images per class and a moderate domain: the table's partial cell.
SMALL_FAR = Signals(
    num_classes=2, images_per_class=20, min_images_per_class=20, train_images=40,
    probe_images=40, probe_folds=5, probe_acc=0.6, probe_chance=0.5, probe_score=0.2,
    domain_score=0.2,
)  # fmt: skip


def test_the_yaml_target_is_the_public_path() -> None:
    node = load_option(CONF_DIR / "strategy" / "auto.yaml", "strategy").strategy
    assert node._target_ == auto.TARGET == AutoSchema._target_
    assert get_object(auto.TARGET) is AutoStrategy


def test_without_hydra_the_packaged_configs_serve(tmp_path: Path, monkeypatch) -> None:
    # A config built in code (no running Hydra app), from a folder that has no conf/ of its own.
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    monkeypatch.chdir(tmp_path)
    assert not HydraConfig.initialized()
    assert config_roots() == [CONF_DIR]
    for name in ("partial", "scratch", "two_phase"):
        packaged = load_option(CONF_DIR / "strategy" / f"{name}.yaml", "strategy")
        assert strategy_config(name) == packaged and packaged.strategy.name == name
    with pytest.raises(FileNotFoundError, match="no config folder has strategy/nope.yaml"):
        strategy_config("nope")


def test_hydra_search_path_order_wins(tmp_path: Path, monkeypatch) -> None:
    """A user's own config folder (primary), an extra folder and a package, in Hydra's order."""
    mine = tmp_path / "my_conf"
    shutil.copytree(CONF_DIR, mine)
    partial = mine / "strategy" / "partial.yaml"
    partial.write_text(partial.read_text().replace("initial_groups: 3", "initial_groups: 5"))
    (mine / "strategy" / "gradual.yaml").unlink()
    extra = tmp_path / "extra" / "strategy"
    extra.mkdir(parents=True)
    (extra / "mine.yaml").write_text("strategy:\n  name: mine\n  initial_groups: 1\n")
    (extra / "partial.yaml").write_text("strategy:\n  name: shadowed\n")
    search = f"hydra.searchpath=[file://{tmp_path / 'extra'},pkg://thawkit.conf]"
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(mine)):
        cfg = compose(config_name="train", overrides=[search], return_hydra_config=True)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # restored after the test
    HydraConfig().set_config(cfg)
    roots = [str(r) for r in config_roots()]
    assert roots.index(str(mine)) < roots.index(str(tmp_path / "extra"))
    assert roots[-1] == str(CONF_DIR)  # pkg://thawkit.conf is the packaged folder
    # The primary folder first, as `strategy=partial` itself would compose.
    assert strategy_config("partial").strategy.initial_groups == 5
    assert strategy_config("mine").strategy.name == "mine"  # only the extra folder has it
    gradual = strategy_config("gradual")  # only the package has it now
    assert gradual == load_option(CONF_DIR / "strategy" / "gradual.yaml", "strategy")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "extra")):
        strategy_config("nope")


def test_the_run_entry_checks_what_auto_wrote(tmp_path, image_folder, monkeypatch) -> None:
    from thawkit.run.train import build

    # A backbone that claims 400 layer groups makes partial train the top 134 of them; the
    # real test backbone has 6, so the config auto wrote is invalid and the run stops there.
    monkeypatch.setattr(auto_resolve, "measure", lambda *a, **k: SMALL_FAR)
    monkeypatch.setattr(auto_resolve, "layer_group_names", lambda name: ["g"] * 400)
    # The table's choice alone (a race would train the 400-group plan before any check).
    no_race = ["strategy=auto", "strategy.race=false"]
    cfg = tiny_cfg(tmp_path, no_race, data_root=image_folder)
    with pytest.raises(ConfigError, match="strategy.initial_groups=134 is larger"):
        build(cfg)
    assert not (tmp_path / "run" / "auto.json").exists()  # an invalid choice is not recorded
    # Without a check (a config resolved in code) the same choice is written as decided.
    cfg = tiny_cfg(tmp_path, no_race, data_root=image_folder)
    datamodule = instantiate(cfg.data, preprocessing=resolve_preprocessing(cfg.model.backbone))
    record = auto.resolve_auto(cfg, datamodule)  # the measure above reads no data
    assert record["strategy_args"] == {"initial_groups": 134}
