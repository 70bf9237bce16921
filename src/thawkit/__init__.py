"""thawkit: fine-tune pretrained image CNNs on your own image folders, strategy done right."""

import os
from pathlib import Path

# torch's OpenMP runtime (libgomp) lets a thread that waits for work spin 300,000 times before it
# sleeps. When other processes want the same cores (DataLoader workers, other jobs), the spinning
# thread burns the time slice the working thread needs. Measured on 2 cores under a load of 5
# (docs/benchmarks.md): a training step took 268 ms/image with the default and 81 with 10,000
# spins, while on an idle machine the two were within noise. Set before torch is imported (as
# train.py does); an OMP_WAIT_POLICY or GOMP_SPINCOUNT of your own wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"

# The Hydra configs ship inside the package, so an installed thawkit finds them from any folder.
CONF_DIR = Path(__file__).resolve().with_name("conf")
