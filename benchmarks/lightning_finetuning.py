"""Lightning's own way: a LightningModule with `backbone` and `head`, frozen and unfrozen by
Lightning's `BackboneFinetuning` callback (two_phase, feature_extraction) or a `BaseFinetuning`
subclass that unfreezes one more layer group per epoch (gradual: BackboneFinetuning unfreezes the
whole backbone at once, and Lightning's docs say to subclass BaseFinetuning for other schedules).

Data as in the reference loop (ImageFolder, torchvision transforms, DataLoader(num_workers=4)),
SGD(lr=1e-3, momentum=0.9) over what requires grad, the callback's defaults otherwise
(`train_bn=True`: BatchNorm layers of the frozen backbone keep training), the Trainer's defaults
(TensorBoard logger, checkpointing) without the progress bar.
"""

from __future__ import annotations

import time

from common import Result, base_args, epoch_timer, scratch_dir


def main() -> None:
    args = base_args(__doc__.splitlines()[0]).parse_args()
    import lightning as L
    import torch
    import torch.nn.functional as F
    from lightning.pytorch.callbacks import BackboneFinetuning, BaseFinetuning
    from torch import nn
    from torchvision import datasets, transforms

    from thawkit.models.backbone import build_backbone

    start = time.perf_counter()  # imports excluded

    L.seed_everything(args.seed)
    backbone = build_backbone("tf_efficientnet_lite0", "bundled")
    pre, size = backbone.preprocessing, args.size
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(pre.mean, pre.std),
    ])  # fmt: skip
    val_tf = transforms.Compose([
        transforms.Resize(int(round(size / pre.crop_pct))), transforms.CenterCrop(size),
        transforms.ToTensor(), transforms.Normalize(pre.mean, pre.std),
    ])  # fmt: skip
    train_ds = datasets.ImageFolder(f"{args.data}/train", train_tf)
    val_ds = datasets.ImageFolder(f"{args.data}/val", val_tf)
    loader = torch.utils.data.DataLoader

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.head = nn.Linear(backbone.num_features, len(train_ds.classes))

        def forward(self, x):
            return self.head(self.backbone(x))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            acc = (self(x).argmax(1) == y).float().mean()
            self.log("val_acc", acc, batch_size=len(y))

        def configure_optimizers(self):
            params = [p for p in self.parameters() if p.requires_grad]
            return torch.optim.SGD(params, lr=1e-3, momentum=0.9)

        def train_dataloader(self):
            return loader(train_ds, batch_size=args.batch_size, shuffle=True, num_workers=4)

        def val_dataloader(self):
            return loader(val_ds, batch_size=args.batch_size, num_workers=4)

    groups = list(reversed(backbone.groups))  # top-down

    def modules_of(group):
        ids = {id(p) for p in group.params}
        return [
            m for m in backbone.modules() if any(id(p) in ids for p in m.parameters(recurse=False))
        ]

    class GradualFinetuning(BaseFinetuning):
        def freeze_before_training(self, pl_module):
            self.freeze(pl_module.backbone)

        def finetune_function(self, pl_module, epoch, optimizer):
            if 1 <= epoch <= len(groups):
                self.unfreeze_and_add_param_group(modules_of(groups[epoch - 1]), optimizer)

    if args.strategy == "gradual":
        finetuning = GradualFinetuning()
    else:
        at = 2 if args.strategy == "two_phase" else args.epochs + 1
        finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=at)

    def groups_of_epoch(trainer, module) -> int:
        # Convolution weights tell (with train_bn=True, BatchNorm parameters always train).
        return sum(any(p.requires_grad for p in g.params if p.ndim > 1) for g in groups)

    result = Result("lightning", args.strategy, args.seed, args.epochs, size)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=[finetuning, epoch_timer(result, groups_of_epoch)],
        default_root_dir=scratch_dir("bench-lightning-"),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Classifier())
    result.finish(start, args.out)


if __name__ == "__main__":
    main()
