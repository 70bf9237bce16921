"""A shifted target domain for the default digits: coloured digits on photo patches (MNIST-M-like).

MNIST-M (Ganin & Lempitsky 2015) blends MNIST digits over patches of colour photos: the
classic benchmark for unsupervised domain adaptation. This builds the same shift, offline, from
the default dataset (`thawkit.data.digits`: scikit-learn's 8x8 handwritten digits, white on
black) and the colour photos that scikit-image and scikit-learn ship (astronaut, coffee, cat,
rocket, Hubble deep field, immunohistochemistry, a Chinese temple, a flower):

    pixel = | background - digit_mask * colour |   (per channel)

with the digit upscaled to `size` px and smoothed into a mask in [0, 1], the background a
random crop of a random photo at a random scale, and a random bright colour per image (colour
(255, 255, 255) is MNIST-M's own formula). The result, under `<root>/`:

    unlabelled/*.png     the digits of the default training split, no labels (da.target_root)
    test/<digit>/*.png   the digits of the default test split, labelled (da.target_val_root)

The images are the same scans as the source's splits, as MNIST-M's are MNIST's: adaptation sees
the training digits in the new domain without their labels, and is measured on test digits it
never saw in either domain. Built once (written to a temporary folder and renamed into place);
`python -m thawkit.data.shifted_digits` builds it and prints the two folders.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from thawkit.data.digits import publish

log = logging.getLogger(__name__)

DEFAULT_SHIFTED_ROOT = (
    Path(os.environ.get("THAWKIT_DATA", "~/.cache/thawkit")).expanduser() / "digits_shifted"
)
_MARKER = ".thawkit-digits-shifted-v1"
UNLABELLED, TEST = "unlabelled", "test"
# Photo patches are cut at a side of this many times the output size, at most, then resized:
# a range of scales gives both smooth colour fields and busy textures behind the digits.
_MAX_PATCH_SCALE = 4.0


def background_photos() -> list[np.ndarray]:
    """The colour photos shipped with scikit-image and scikit-learn, as H x W x 3 uint8."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field"]
    names.append("immunohistochemistry")
    photos = [np.asarray(getattr(skimage.data, n)())[..., :3] for n in names]
    photos += [np.asarray(p)[..., :3] for p in load_sample_images().images]
    return [p.astype(np.uint8) for p in photos]


def shift_digit(
    digit: np.ndarray, photos: list[np.ndarray], rng: np.random.Generator, size: int = 32
) -> np.ndarray:
    """One digit (2-D, 0 = background, max = ink) as an RGB image on a photo patch.

    Args:
        digit: the digit's grey values (any range; scaled by its maximum to a mask in [0, 1]).
        photos: background photos (H x W x 3 uint8).
        rng: the random source (photo, crop, scale, colour).
        size: side of the output in pixels.

    Returns:
        size x size x 3 uint8.
    """
    peak = float(digit.max()) or 1.0
    grey = Image.fromarray(np.clip(digit / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
    mask = np.asarray(grey.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(rng.integers(size, int(min(h, w, size * _MAX_PATCH_SCALE)) + 1))
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    patch = Image.fromarray(photo[top : top + side, left : left + side])
    background = np.asarray(patch.resize((size, size), Image.Resampling.BILINEAR), np.float32)
    colour = rng.uniform(128.0, 255.0, size=3).astype(np.float32)
    return np.abs(background - mask[..., None] * colour).clip(0, 255).astype(np.uint8)


def _digit_splits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, train ids, test ids): the same split as `thawkit.data.digits`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.images))
    train, rest = train_test_split(idx, test_size=0.3, stratify=digits.target, random_state=seed)
    _, test = train_test_split(rest, test_size=0.5, stratify=digits.target[rest], random_state=seed)
    return digits.images, digits.target, train, test


def export_shifted_digits(
    root: str | Path = DEFAULT_SHIFTED_ROOT, seed: int = 0, size: int = 32
) -> Path:
    """Write the shifted digits to `root` (once): `unlabelled/` and `test/<digit>/`.

    Args:
        root: output folder; an existing complete export is reused as it is.
        seed: seed of the digits' split (as `export_digits`) and of the backgrounds and colours.
        size: side of the images in pixels.
    """
    root = Path(root).expanduser()
    if (root / _MARKER).exists():
        return root
    images, labels, train, test = _digit_splits(seed)
    photos = background_photos()
    rng = np.random.default_rng(seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".digits-shifted-", dir=root.parent))
    (tmp / UNLABELLED).mkdir()
    for i in train:
        image = shift_digit(images[i], photos, rng, size)
        Image.fromarray(image, mode="RGB").save(tmp / UNLABELLED / f"{i:04d}.png")
    for i in test:
        folder = tmp / TEST / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        image = shift_digit(images[i], photos, rng, size)
        Image.fromarray(image, mode="RGB").save(folder / f"{i:04d}.png")
    publish(
        tmp,
        root,
        _MARKER,
        f"scikit-learn digits on scikit-image/scikit-learn photo patches, {size} px, seed {seed}\n",
    )
    log.info("Exported the shifted digits to %s", root)
    return root


def main(argv: list[str] | None = None) -> None:
    """`python -m thawkit.data.shifted_digits [--root DIR]`: build and print the folders."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(DEFAULT_SHIFTED_ROOT), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    args = parser.parse_args(argv)
    root = export_shifted_digits(args.root, args.seed, args.size)
    print(f"da.target_root={root / UNLABELLED}")
    print(f"da.target_val_root={root / TEST}")


if __name__ == "__main__":
    main()
