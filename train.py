"""Fine-tune a pretrained CNN: `python train.py strategy=gradual`, sweeps with `-m`."""

import hydra
from omegaconf import DictConfig

from thawkit.run.train import main as run


@hydra.main(version_base="1.3", config_path="src/thawkit/conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
