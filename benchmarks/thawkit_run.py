"""thawkit as users run it (`python train.py strategy=...`), composed from the real configs.

Runs `thawkit.run.train.build` + `trainer.fit` (train.py's path without the test pass, as the
other variants have no test split either). `--overrides` adds Hydra overrides, e.g.
`speed=off` or `callbacks.speed.feature_views=1`.
"""

from __future__ import annotations

import os
import tempfile
import time

from common import Result, base_args, epoch_timer

from thawkit import CONF_DIR


def main() -> None:
    p = base_args(__doc__.splitlines()[0])
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
        f"paths.output_dir={tempfile.mkdtemp(prefix='bench-thawkit-')}",
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
    result.finish(start, args.out)


if __name__ == "__main__":
    main()
