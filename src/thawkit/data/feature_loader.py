"""The loaders that put cached features in place of images, batch for batch.

`SwitchingLoader` stands where the data module's train or val loader stood and picks, when an
epoch starts, between the images and cached features (`thawkit.data.feature_cache` decides);
`loader_like` builds the features loader that batches exactly as the image loader does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset

from thawkit.seeding import SeededSamples


class FeatureSource(Protocol):
    """What a `SwitchingLoader` asks at the start of every epoch (`FeatureCache`)."""

    def features_loader(self, split: str, loader: DataLoader) -> DataLoader | None: ...


class SwitchingLoader:
    """A train or val loader that serves cached features in head-only epochs, images otherwise.

    Behaves like the wrapped DataLoader (same length; `sampler`, `batch_size`, `dataset` and
    other attributes are the image loader's). The source is chosen when an epoch starts
    iterating, so nothing is computed until the first batch is requested.
    """

    def __init__(self, cache: FeatureSource, split: str, loader: DataLoader) -> None:
        self.cache = cache
        self.split = split
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        source = self.cache.features_loader(self.split, self.loader)
        yield from self.loader if source is None else source

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


def loader_like(loader: DataLoader, dataset: TensorDataset) -> DataLoader:
    """A DataLoader over `dataset` that batches exactly as `loader` does (same sampler)."""
    if isinstance(loader.dataset, SeededSamples):
        # The training sampler yields (index, seed) pairs; features need no augmentation seed.
        dataset = SeededSamples(dataset)
    sampler = loader.sampler
    kwargs: dict[str, Any]
    if isinstance(sampler, RandomSampler):
        kwargs = {"shuffle": True, "generator": sampler.generator}
    elif isinstance(sampler, SequentialSampler):
        kwargs = {"shuffle": False}
    else:  # e.g. the weighted sampler: shared, so both sources draw the same indices
        kwargs = {"sampler": sampler}
    return DataLoader(
        dataset, batch_size=loader.batch_size, drop_last=loader.drop_last, num_workers=0, **kwargs
    )
