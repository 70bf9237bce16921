"""Predict classes: `python predict.py ckpt=PATH input=IMAGE_OR_FOLDER [top_k=3]`.

The same as `thawkit predict ...` (thawkit.cli), from a checkout.
"""

import sys

from thawkit.cli import main

if __name__ == "__main__":
    main(["predict", *sys.argv[1:]])
