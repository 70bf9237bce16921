"""Fine-tune a pretrained CNN: `python train.py strategy=gradual`, sweeps with `-m`.

The same as `thawkit train ...` (thawkit.cli), from a checkout.
"""

import sys

from thawkit.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
