"""thawkit as users run it (`python train.py strategy=...`), composed from the real configs.

Runs `thawkit.run.train.build` + `trainer.fit` (train.py's path without the test pass, as the
other variants have no test split either). `--overrides` adds Hydra overrides, e.g.
`speed=off` or `callbacks.speed.feature_views=1`.
"""

from __future__ import annotations

import os
import time

from common import Result, base_args, epoch_timer, scratch_dir

from thawkit import CONF_DIR

STRATEGY_CONFIGS = tuple((CONF_DIR / "strategy").glob("*.yaml"))


def main() -> None:
    # Any of thawkit's strategies (the shared STRATEGIES are those the plain loops also run).
    p = base_args(__doc__.splitlines()[0], tuple(sorted(f.stem for f in STRATEGY_CONFIGS)))
    p.add_argument("--overrides", nargs="*", default=[])
    p.add_argument("--name", default="thawkit", help="framework name in the result")
    args = p.parse_args()
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from thawkit.run.train import build

    start = time.perf_counter()  # imports excluded

    overrides = [
        f"strategy={args.strategy}", f"data.root={os.path.abspath(args.data)}",
        f"data.image_size={args.size}", f"data.batch_size={args.batch_size}",
        f"trainer.max_epochs={args.epochs}", f"seed={args.seed}",
        "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
        f"paths.output_dir={scratch_dir('bench-thawkit-')}",
        *args.overrides,
    ]  # fmt: skip
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.trainer.enable_model_summary = False
    datamodule, model, trainer = build(cfg)
    result = Result(args.name, args.strategy, args.seed, args.epochs, args.size)
    trainer.callbacks.append(epoch_timer(result, lambda t, m: m.num_trainable_groups))
    trainer.fit(model, datamodule=datamodule)
    result.setup = setup_record(datamodule, trainer)
    result.finish(start, args.out)


def setup_record(datamodule, trainer) -> dict:
    """The run's set-up from its own records: the bad-image scan, the decode into the image
    cache, the feature-cache passes, and what the two caches hold in memory."""
    from thawkit.run.speed import SpeedOptions

    speed = next((c for c in trainer.callbacks if isinstance(c, SpeedOptions)), None)
    features = speed.features if speed is not None else None
    cache = datamodule.image_cache
    return {
        "scan_s": datamodule.check_time_s,
        "decode_s": cache.fill_time_s if cache is not None else 0.0,
        "features_s": features.extract_time_s if features is not None else 0.0,
        "extractions": features.extractions if features is not None else [],
        "image_cache_mb": cache.nbytes / 2**20 if cache is not None else 0.0,
        "features_mb": features.store.memory_bytes / 2**20 if features is not None else 0.0,
        "image_budget_mb": speed.image_cache_mb if speed is not None else 0.0,
        "feature_budget_mb": features.store.budget_bytes / 2**20 if features is not None else 0.0,
    }


if __name__ == "__main__":
    main()
