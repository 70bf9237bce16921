"""Evaluate a checkpoint: `python evaluate.py ckpt=PATH [data.root=FOLDER] [split=test]`."""

import hydra
from omegaconf import DictConfig

from thawkit.inference.evaluate import main as run


@hydra.main(version_base="1.3", config_path="src/thawkit/conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
