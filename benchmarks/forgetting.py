"""Forgetting: the original ImageNet head on ImageNet-like photos, before and after fine-tuning.

Fine-tunes the bundled EfficientNet-Lite0 on a target folder (hymenoptera by default) with and
without a regularizer (L2-SP, EWC), then puts the pretrained ImageNet classifier back on each
fine-tuned backbone and classifies photos that ship with scikit-image and have clear ImageNet
classes (chelsea: a cat, coffee: an espresso, rocket: a missile, camera: a tripod), ten views
each (centre, four corner crops, and their mirror images). Reports, per run:

- top-1 / top-5: the ImageNet prediction is one of the photo's accepted classes;
- agree: the top-1 class equals the original model's top-1 on the same view;
- p(true): mean probability on the accepted classes;
- ||w - w0||: distance of the backbone from the pretrained weights;
- val/acc: accuracy on the target task (the price of not forgetting).

    python benchmarks/forgetting.py --epochs 3 --size 128
    python benchmarks/forgetting.py --runs none l2sp:0.1 l2sp:1 ewc:1 --out forgetting.json
    python benchmarks/forgetting.py --runs none,model.bn_policy=all l2sp:10,model.bn_policy=all
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass

import torch
from common import DEFAULT_DATA, scratch_dir
from PIL import Image

from thawkit import CONF_DIR

# skimage photo -> accepted ImageNet-1k class indices.
PHOTOS: dict[str, set[int]] = {
    "chelsea": {281, 282, 283, 284, 285, 287},  # tabby, tiger, Persian, Siamese, Egyptian, lynx
    "coffee": {504, 967, 968},  # coffee mug, espresso, cup
    "rocket": {657, 744, 812},  # missile, projectile, space shuttle
    "camera": {732, 759, 872},  # Polaroid camera, reflex camera, tripod
}
IMAGENET_SIZE = 224  # Lite0's own evaluation size for ImageNet


@dataclass
class Row:
    run: str
    top1: float
    top5: float
    agree: float
    p_true: float
    distance: float
    val_acc: float | None
    train_s: float


def photo_views(size: int = IMAGENET_SIZE) -> tuple[torch.Tensor, list[set[int]]]:
    """Ten normalised views of every photo (mean = std = 0.5, Lite0's preprocessing)."""
    import skimage.data
    from torchvision.transforms import v2 as T

    to_tensor = T.Compose(
        [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize([0.5] * 3, [0.5] * 3)]
    )
    views, labels = [], []
    for name, accepted in PHOTOS.items():
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        image = T.Resize(int(size / 0.875))(image)
        crops = [T.CenterCrop(size)(image), *T.FiveCrop(size)(image)[:4]]
        for crop in crops:
            for view in (crop, T.functional.horizontal_flip(crop)):
                views.append(to_tensor(view))
                labels.append(accepted)
    return torch.stack(views), labels


@torch.no_grad()
def imagenet_scores(
    backbone: torch.nn.Module, classifier: torch.nn.Module, x: torch.Tensor
) -> torch.Tensor:
    backbone.eval()
    classifier.eval()
    return torch.softmax(classifier(backbone(x)), dim=-1)


def score(
    run: str,
    probs: torch.Tensor,
    labels: list[set[int]],
    reference: torch.Tensor,
    **extra: float | None,
) -> Row:
    top5 = probs.topk(5, dim=-1).indices
    top1 = top5[:, 0]
    n = len(labels)
    return Row(
        run=run,
        top1=sum(int(t) in ok for t, ok in zip(top1, labels, strict=True)) / n,
        top5=sum(bool(set(t.tolist()) & ok) for t, ok in zip(top5, labels, strict=True)) / n,
        agree=float((top1 == reference).float().mean()),
        p_true=float(
            sum(probs[i, sorted(ok)].sum() for i, ok in enumerate(labels)) / n  # type: ignore[arg-type]
        ),
        **extra,  # type: ignore[arg-type]
    )


def fine_tune(data: str, run: str, args: argparse.Namespace) -> tuple:
    """One thawkit run (strategy=full unless overridden); returns the model and the trainer.

    `run`: `none`, `l2sp:<strength>` or `ewc:<strength>`, then optional comma-separated
    Hydra overrides for this run alone.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from thawkit.run.train import build

    overrides = [
        f"strategy={args.strategy}", f"data.root={data}", f"data.image_size={args.size}",
        f"data.batch_size={args.batch_size}", f"trainer.max_epochs={args.epochs}",
        f"seed={args.seed}", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
        "~logger", "callbacks.early_stopping=null", "callbacks.views=null",
        f"paths.output_dir={scratch_dir('bench-forgetting-')}",
        *args.overrides,
    ]  # fmt: skip
    regularizer, *extra = run.split(",")
    overrides += extra  # per-run Hydra overrides: "l2sp:1,model.bn_policy=all"
    if regularizer != "none":
        kind, _, strength = regularizer.partition(":")
        overrides += [f"regularizer={kind}", f"regularizer.strength={strength or 0.1}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.trainer.enable_model_summary = False
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    return model, trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="target image folder (train/ val/)")
    p.add_argument("--runs", nargs="+", default=["none", "l2sp:0.1", "l2sp:1", "ewc:1"],
                   help="none | l2sp:<strength> | ewc:<strength>, then ,<override>...")  # fmt: skip
    p.add_argument("--strategy", default="full")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--size", type=int, default=128, help="fine-tuning image size")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides")
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from thawkit.models.backbone import build_backbone
    from thawkit.transfer.regularize import source_classifier

    classifier = source_classifier("tf_efficientnet_lite0", "bundled")
    x, labels = photo_views()
    pretrained = build_backbone("tf_efficientnet_lite0", "bundled").model
    w0 = {n: p.detach().clone() for n, p in pretrained.named_parameters()}
    probs = imagenet_scores(pretrained, classifier, x)
    reference = probs.argmax(-1)
    rows = [score("pretrained", probs, labels, reference, distance=0.0, val_acc=None, train_s=0)]
    for run in args.runs:
        start = time.perf_counter()
        model, trainer = fine_tune(args.data, run, args)
        elapsed = time.perf_counter() - start
        backbone = model.backbone.model.cpu().to(memory_format=torch.contiguous_format)
        distance = (
            sum(float((p.detach() - w0[n]).pow(2).sum()) for n, p in backbone.named_parameters())
            ** 0.5
        )
        val = trainer.callback_metrics.get("val/acc")
        rows.append(
            score(
                run,
                imagenet_scores(backbone, classifier, x),
                labels,
                reference,
                distance=distance,
                val_acc=None if val is None else float(val),
                train_s=round(elapsed, 1),
            )
        )
    print(
        f"\nForgetting: ImageNet head of Lite0 on {len(x)} views of {len(PHOTOS)} photos; "
        f"fine-tuned on {args.data} ({args.strategy}, {args.epochs} epochs, {args.size} px)\n"
    )
    print("| run | top-1 | top-5 | agree | p(true) | ‖w − w0‖ | val/acc | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        val = "–" if r.val_acc is None else f"{r.val_acc:.3f}"
        print(
            f"| {r.run} | {r.top1:.3f} | {r.top5:.3f} | {r.agree:.3f} | {r.p_true:.3f} "
            f"| {r.distance:.2f} | {val} | {r.train_s} |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=2)


if __name__ == "__main__":
    main()
