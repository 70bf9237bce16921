"""The floor: a bare process that decodes every image once and runs one frozen forward pass.

No training, no framework: ImageFolder's files (train and val), each decoded once with PIL and
the validation transform (Resize to size / crop_pct, CenterCrop, ToTensor, Normalize), stacked
in batches of 64 and run once through the frozen backbone under `torch.inference_mode()` in
channels_last. Whatever feature_extraction does, it does at least this, so its whole-process
wall is compared with this one's (interpreter start and imports included: `benchmarks/run.py`
times the process from outside).

Reports the forward pass's own images/s (decoding excluded) next to the wall times.
"""

from __future__ import annotations

import time

from common import DEFAULT_DATA, peak_rss_mb


def main() -> None:
    import argparse
    import json
    from pathlib import Path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="image folder with train/ and val/")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default=None, help="write the JSON result here")
    args = p.parse_args()
    import torch
    from PIL import Image
    from torchvision import datasets, transforms

    from thawkit.models.backbone import build_backbone

    start = time.perf_counter()  # after the imports; the caller's clock includes them
    backbone = build_backbone("tf_efficientnet_lite0", "bundled")
    pre = backbone.preprocessing
    transform = transforms.Compose([
        transforms.Resize(int(round(args.size / pre.crop_pct))),
        transforms.CenterCrop(args.size),
        transforms.ToTensor(),
        transforms.Normalize(pre.mean, pre.std),
    ])  # fmt: skip
    files = [
        path
        for split in ("train", "val")
        for path, _ in datasets.ImageFolder(f"{args.data}/{split}").samples
    ]
    model = backbone.eval().to(memory_format=torch.channels_last)
    decode_s = forward_s = 0.0
    features = []
    with torch.inference_mode():
        for i in range(0, len(files), args.batch_size):
            t0 = time.perf_counter()
            batch = []
            for path in files[i : i + args.batch_size]:
                with Image.open(path) as img:
                    batch.append(transform(img.convert("RGB")))
            x = torch.stack(batch).contiguous(memory_format=torch.channels_last)
            t1 = time.perf_counter()
            features.append(model(x))
            forward_s += time.perf_counter() - t1
            decode_s += t1 - t0
    n = sum(len(f) for f in features)
    result = {
        "framework": "floor",
        "image_size": args.size,
        "batch_size": args.batch_size,
        "images": n,
        "wall_s": time.perf_counter() - start,
        "decode_s": decode_s,
        "forward_s": forward_s,
        "forward_images_per_s": n / forward_s,
        "peak_rss_mb": peak_rss_mb(),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
