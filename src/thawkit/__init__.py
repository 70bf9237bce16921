"""thawkit: fine-tune pretrained image CNNs on your own image folders, strategy done right."""

import os

# OpenMP threads that wait for work sleep instead of spinning. On a machine with few cores
# shared with other work (DataLoader workers, other jobs), spinning threads burn the cores the
# working thread needs: measured on 2 cores under load, a feature-extraction forward took 24.6
# ms/image with spinning and 9.0 with sleeping threads (docs/benchmarks.md). Only takes effect
# when thawkit is imported before torch (train.py does); an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
