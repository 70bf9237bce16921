"""Audit an image folder: `python audit.py data.root=FOLDER`.

Leakage between splits, duplicates, likely label errors, outliers and unusable images, written
to a new run dir. The same as `thawkit audit ...` (thawkit.cli), from a checkout.
"""

import sys

from thawkit.cli import main

if __name__ == "__main__":
    main(["audit", *sys.argv[1:]])
