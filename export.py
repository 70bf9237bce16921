"""Export a checkpoint: `python export.py ckpt=PATH format=onnx|torchscript`."""

import hydra
from omegaconf import DictConfig

from thawkit.inference.export import main as run


@hydra.main(version_base="1.3", config_path="src/thawkit/conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
