"""Try a checkpoint in the browser: `python serve.py ckpt=PATH [host=127.0.0.1] [port=8000]`.

The same as `thawkit serve ...` (thawkit.cli), from a checkout.
"""

import sys

from thawkit.cli import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])
