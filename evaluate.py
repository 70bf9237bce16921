"""Evaluate a checkpoint: `python evaluate.py ckpt=PATH [data.root=FOLDER] [split=test]`.

The same as `thawkit evaluate ...` (thawkit.cli), from a checkout.
"""

import sys

from thawkit.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
