"""Data: ImageFolder reading, default digits dataset, transforms, imbalance and batch mixing."""

from thawkit.data.datamodule import ImageFolderDataModule

__all__ = ["ImageFolderDataModule"]
