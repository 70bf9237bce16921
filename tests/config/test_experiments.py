"""Every experiment (and the Optuna search) composes, job by job, with the values it promises.

Each job of a sweep is composed exactly as Hydra's sweeper composes it (the experiment plus
that job's overrides), so the defaults-list order can never silently win over a strategy's
own settings (e.g. scratch's random init) or over the experiment.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

import thawkit
from conftest import CONF_DIR
from thawkit.config.schema import ModelSchema

CONF = thawkit.CONF_DIR
STRATEGIES = [
    "feature_extraction", "partial", "gradual", "full", "two_phase", "lp_ft", "auto", "scratch",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _hydra():
    # One initialisation for the module: composing ~80 jobs stays fast.
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        yield
    GlobalHydra.instance().clear()


def compose_cfg(*overrides: str) -> DictConfig:
    return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def sweep_jobs(experiment: str) -> list[dict[str, str]]:
    """The jobs (override -> value) the basic sweeper launches for `experiment`."""
    params = compose_cfg(f"experiment={experiment}").hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [dict(o.split("=", 1) for o in job) for job in batch]


def compose_job(experiment: str, job: dict[str, str]) -> DictConfig:
    return compose_cfg(f"experiment={experiment}", *(f"{k}={v}" for k, v in job.items()))


def one_seed(jobs: list[dict[str, str]]) -> list[dict[str, str]]:
    """The jobs of the first seed, plus one of another: seeds change no composition."""
    first = [j for j in jobs if j["seed"] == jobs[0]["seed"]]
    return first + [next(j for j in jobs if j["seed"] != jobs[0]["seed"])]


def check_strategy_defaults(cfg: DictConfig, strategy: str) -> None:
    """The strategy's own settings survived the experiment (defaults-list order)."""
    assert cfg.strategy.name == strategy
    if strategy == "scratch":
        assert cfg.model.weights == "none" and cfg.model.lr_decay == 1.0
    elif cfg.model.backbone == "tf_efficientnet_lite0":
        default = ModelSchema.lr_decay
        assert cfg.model.weights == "bundled" and cfg.model.lr_decay == default


def check_compare_strategies(jobs: list[dict[str, str]], compose_one: Callable) -> None:
    assert len(jobs) == 3 * len(STRATEGIES)
    assert {j["strategy"] for j in jobs} == set(STRATEGIES)
    assert {j["seed"] for j in jobs} == {"0", "1", "2"}
    for job in one_seed(jobs):
        cfg = compose_one(job)
        check_strategy_defaults(cfg, job["strategy"])
        assert cfg.seed == int(job["seed"]) and cfg.data.seed == cfg.seed
        assert cfg.callbacks.early_stopping is None
        assert cfg.trainer.max_epochs == 10 and cfg.data.augment.name == "basic"
        assert "compare_strategies" in cfg.hydra.sweep.dir


def check_unfreeze_schedules(jobs: list[dict[str, str]], compose_one: Callable) -> None:
    assert len(jobs) == 9
    expected = {"every_epoch": (1, False), "every_3_epochs": (3, False), "on_plateau": (None, True)}
    assert {j["unfreeze"] for j in jobs} == set(expected)
    for job in one_seed(jobs):
        cfg = compose_one(job)
        check_strategy_defaults(cfg, "gradual")
        assert (cfg.strategy.every_n_epochs, cfg.strategy.on_plateau) == expected[job["unfreeze"]]
        assert cfg.strategy.groups_per_step == 1 and cfg.strategy.initial_groups == 0
        assert cfg.trainer.max_epochs == 12 and cfg.callbacks.early_stopping is None


def check_ablation(jobs: list[dict[str, str]], compose_one: Callable) -> None:
    assert len(jobs) == 3 * 3 * 2 * 2 * 2
    # Bundled weights for every backbone: the grid runs offline.
    backbones = {
        "default": ("tf_efficientnet_lite0", "bundled"),
        "efficientnet_lite1": ("tf_efficientnet_lite1", "bundled"),
        "efficientnet_lite2": ("tf_efficientnet_lite2", "bundled"),
    }
    assert {j["seed"] for j in jobs} == {"0", "1"}
    assert {j["model"] for j in jobs} == set(backbones)
    assert {j["strategy"] for j in jobs} == {"feature_extraction", "gradual", "full"}
    assert {j["augment"] for j in jobs} == {"basic", "strong"}
    assert {j["scheduler"] for j in jobs} == {"cosine", "onecycle"}
    # The factors do not interact in composition: jobs that cover every value of every factor
    # (and both seeds) are enough, and keep the 72-job grid cheap to check.
    covered: set[tuple[str, str]] = set()
    cover = []
    for job in jobs:
        if set(job.items()) - covered:
            cover.append(job)
            covered |= set(job.items())
    for job in cover:
        cfg = compose_one(job)
        check_strategy_defaults(cfg, job["strategy"])
        assert (cfg.model.backbone, cfg.model.weights) == backbones[job["model"]]
        assert cfg.data.augment.name == job["augment"]
        assert cfg.scheduler.name == job["scheduler"]
        assert cfg.seed == int(job["seed"])


def check_digits_shift(jobs: list[dict[str, str]], compose_one: Callable) -> None:
    assert len(jobs) == 9
    assert {j["da"] for j in jobs} == {"none", "dann", "mmd"}
    assert {j["seed"] for j in jobs} == {"0", "1", "2"}
    for job in one_seed(jobs):
        cfg = compose_one(job)
        check_strategy_defaults(cfg, "full")
        assert cfg.da.method == job["da"] and cfg.data.root is None
        assert cfg.da.target_root.endswith("digits_shifted/unlabelled")
        assert cfg.da.target_val_root.endswith("digits_shifted/test")
        assert cfg.data.image_size == 32 and cfg.data.augment.hflip == 0.0
        assert cfg.trainer.max_epochs == 8


CHECKS = {
    "digits_shift": check_digits_shift,
    "compare_strategies": check_compare_strategies,
    "unfreeze_schedules": check_unfreeze_schedules,
    "ablation": check_ablation,
}


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_experiment_jobs_compose_with_their_values(experiment: str) -> None:
    text = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_"), "experiments are global packages"
    assert experiment in CHECKS, f"add the key values of experiment={experiment} to CHECKS"
    CHECKS[experiment](sweep_jobs(experiment), lambda job: compose_job(experiment, job))


def test_optuna_search_space_exists_in_the_config() -> None:
    cfg = compose_cfg("hparams_search=optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.optimized_metric == "val/acc" and sweeper.direction == "maximize"
    assert cfg.callbacks.model_checkpoint.mode == "max"
    assert set(sweeper.params) == {
        "model.lr", "model.lr_decay", "model.weight_decay", "model.head.dropout",
        "data.mix.mixup_alpha", "strategy.every_n_epochs",
    }  # fmt: skip
    # Every searched key exists in the composed config, so no trial fails to compose.
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key
    assert cfg.data.mix.mode == "mixup" and cfg.strategy.name == "gradual"
    # A strategy given on the command line still wins over the search's default.
    assert compose_cfg("hparams_search=optuna", "strategy=two_phase").strategy.name == "two_phase"


def test_trainer_and_launcher_configs() -> None:
    ddp = compose_cfg("trainer=ddp").trainer
    assert ddp.strategy._target_ == "thawkit.finetune.ddp.FreezeAwareDDPStrategy"
    assert (ddp.accelerator, ddp.devices, ddp.num_nodes) == ("gpu", 2, 1)
    ddp_cpu = compose_cfg("trainer=ddp_cpu").trainer
    assert (ddp_cpu.accelerator, ddp_cpu.devices) == ("cpu", 2)
    assert ddp_cpu.strategy.process_group_backend == "gloo"
    assert ddp_cpu.strategy._target_ == ddp.strategy._target_

    cfg = compose_cfg(
        "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["gpus_per_node"], launcher["tasks_per_node"], launcher["nodes"]) == (4, 4, 2)
    assert launcher["timeout_min"] == 240
    for name in ("joblib", "submitit_local"):
        assert compose_cfg(f"hydra/launcher={name}").hydra.launcher._target_.startswith(
            "hydra_plugins"
        )


def test_sweep_job_dirs_are_named_by_their_overrides() -> None:
    hydra_cfg = compose_cfg().hydra
    subdir = OmegaConf.to_container(hydra_cfg.sweep)["subdir"]  # unresolved: no job yet
    assert subdir == "${hydra.job.num}_${thawkit_job_dirname:${hydra.job.override_dirname}}"
    excluded = hydra_cfg.job.config.override_dirname.exclude_keys
    assert {"experiment", "data.root"} <= set(excluded) and "strategy" not in excluded
    assert (
        hydra_cfg.callbacks.sweep_report._target_
        == "thawkit.reporting.sweep_callback.SweepReportCallback"
    )
