"""Export a checkpoint: `python export.py ckpt=PATH format=onnx|torchscript`.

The same as `thawkit export ...` (thawkit.cli), from a checkout.
"""

import sys

from thawkit.cli import main

if __name__ == "__main__":
    main(["export", *sys.argv[1:]])
