"""The training entry: `python train.py`, `thawkit train` and a DDP job's child process.

`main` takes the composed config and runs one job: a resume reads the run's own config
(`thawkit.run.rundir`), `thawkit.run.job` records how the job ended and moves a multirun DDP job
into its own process, and `thawkit.run.train` trains. Importing this module also registers the
config resolvers the Hydra config uses (run dirs, job dir names), so import it before Hydra
composes a training config.

Run as a module it is the child process of a multirun DDP job (`thawkit.run.job.child_command`):
`python -m thawkit.run.entry --config-path CONF --config-name train OVERRIDES...`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from thawkit.console import quiet_lightning
from thawkit.run import job
from thawkit.run.console import announce_result
from thawkit.run.rundir import resumed_config
from thawkit.run.train import train
from thawkit.textio import bytes_safe_streams


def main(cfg: DictConfig) -> float | None:
    """Run one training job; return the optimised metric (its best value) for Hydra sweepers."""
    bytes_safe_streams()  # train.log and the console take any file name (thawkit.textio)
    cfg = resumed_config(cfg)  # python train.py resume=DIR: the run's own config
    value = job.run(cfg, train)
    announce_result(cfg)
    return value


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def _child(cfg: DictConfig) -> float | None:
    quiet_lightning()
    return main(cfg)


if __name__ == "__main__":
    _child()
