"""The plain PyTorch loop of the textbooks: the PyTorch "Transfer Learning for Computer Vision"
tutorial, as users run it.

ImageFolder + torchvision transforms (RandomResizedCrop + flip for training, Resize + CenterCrop
for validation), DataLoader(shuffle=True, num_workers=4), the model in train mode while training
(BatchNorm statistics of a "frozen" backbone keep updating, as in the tutorial), SGD(lr=1e-3,
momentum=0.9) over the parameters that require grad, StepLR(7, 0.1), rebuilt whenever more
layers are unfrozen. Nothing is cached and torch's thread count is left alone.

Only the model differs from the tutorial: thawkit's default backbone (EfficientNet-Lite0 with its
bundled ImageNet weights, its own mean/std) and a new Linear head, so all variants train the same
network; the layer groups that unfreeze are thawkit's.

`--workers N --persistent-workers --pin-memory --name NAME` gives the same loop as a competent
user writes it on this machine: loader workers matched to the cores (the tutorial's 4 workers on
a 2-core machine fight the training threads for the CPU), kept alive across epochs instead of
started again in every epoch, and memory pinned only where a GPU receives the batches.
"""

from __future__ import annotations

import time

from common import Result, base_args, trainable_groups


def main() -> None:
    p = base_args(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers (tutorial: 4)")
    p.add_argument("--persistent-workers", action="store_true")
    p.add_argument("--pin-memory", action="store_true", help="pin batches where a GPU exists")
    p.add_argument("--name", default="reference", help="framework name in the result")
    args = p.parse_args()
    import torch
    from torch import nn
    from torchvision import datasets, transforms

    from thawkit.models.backbone import build_backbone

    start = time.perf_counter()  # imports excluded

    torch.manual_seed(args.seed)
    backbone = build_backbone("tf_efficientnet_lite0", "bundled")
    pre = backbone.preprocessing
    size = args.size
    data_transforms = {
        "train": transforms.Compose([
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]),
        "val": transforms.Compose([
            transforms.Resize(int(round(size / pre.crop_pct))),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]),
    }  # fmt: skip
    image_datasets = {
        x: datasets.ImageFolder(f"{args.data}/{x}", data_transforms[x]) for x in ("train", "val")
    }
    dataloaders = {
        x: torch.utils.data.DataLoader(
            image_datasets[x],
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=args.persistent_workers and args.workers > 0,
            pin_memory=args.pin_memory and torch.cuda.is_available(),  # only a GPU copy gains
        )
        for x in ("train", "val")
    }
    num_classes = len(image_datasets["train"].classes)
    model = nn.Sequential(backbone, nn.Linear(backbone.num_features, num_classes))
    criterion = nn.CrossEntropyLoss()
    groups = list(reversed(backbone.groups))  # top-down
    result = Result(args.name, args.strategy, args.seed, args.epochs, size)

    trained_groups = -1
    optimizer = scheduler = None
    for epoch in range(args.epochs):
        k = trainable_groups(args.strategy, epoch, len(groups))
        if k != trained_groups:  # freeze / unfreeze, and a new optimizer over what trains
            for p in backbone.parameters():
                p.requires_grad = False
            for g in groups[:k]:
                for p in g.params:
                    p.requires_grad = True
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
            trained_groups = k
        row = {"epoch": epoch, "trainable_groups": k}
        for phase in ("train", "val"):
            t0 = time.perf_counter()
            model.train() if phase == "train" else model.eval()
            running_corrects, n, steps_s = 0, 0, 0.0
            for inputs, labels in dataloaders[phase]:
                t_step = time.perf_counter()
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                steps_s += time.perf_counter() - t_step
                running_corrects += int(torch.sum(preds == labels.data))
                n += inputs.size(0)
            if phase == "train":
                scheduler.step()
                elapsed = time.perf_counter() - t0
                result.train_images += n
                result.train_time_s += elapsed
                if k > 0:
                    result.backbone_train_images += n
                    result.backbone_train_time_s += elapsed
                    result.backbone_step_time_s += steps_s
                row["train_time_s"] = round(elapsed, 3)
            else:
                row["val_acc"] = running_corrects / n
        result.history.append(row)
    result.finish(start, args.out)


if __name__ == "__main__":
    main()
