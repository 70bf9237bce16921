"""Predict classes: `python predict.py ckpt=PATH input=IMAGE_OR_FOLDER [top_k=3]`."""

import hydra
from omegaconf import DictConfig

from thawkit.inference.predict import main as run


@hydra.main(version_base="1.3", config_path="src/thawkit/conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
