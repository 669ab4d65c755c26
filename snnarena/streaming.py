"""A bundle for data that does not fit in memory: samples read through ``torch`` data loaders.

:class:`StreamingBundle` has the interface of :class:`snnarena.data.DataBundle` (it is a
:class:`snnarena.data.Bundle`) and gives the same batches for the same generator: the epoch's
order and the per-sample augmentation seeds come from :func:`snnarena.data.training_order`,
drawn in the main process before any sample is read; workers only read and transform samples
(each augmented with a generator seeded by its own seed, so the result does not depend on
``workers``); the batch is then coded over time (:func:`snnarena.data.encode`) in the main
process with the caller's generator. Validation and test batches are read in order, never
augmented, and coded with the generators fixed by the bundle's seed.

Temporal samples (``encoding="none"``: each item already ``[T, ...]``, e.g. binned event frames
read from a memory-mapped file) are batched to ``[B, T, ...]`` and turned time-first, as
:class:`~snnarena.data.DataBundle` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from torch.utils.data import Dataset as TorchDataset

from snnarena.data import (
    DEFAULT_VAL_FRACTION,
    DataInfo,
    Encoding,
    SampleTransform,
    encode,
    encoded_task,
    evaluation_generator,
    training_order,
    transform_batch,
    validation_split,
)


@dataclass(frozen=True)
class Samples:
    """One split: a map-style dataset whose item ``i`` is ``(sample, label)``, and its labels
    ``[N]`` (known without reading the samples: the validation split is stratified by them)."""

    dataset: TorchDataset[Any]
    labels: Tensor

    def __post_init__(self) -> None:
        n = len(cast(Sized, self.dataset))
        if len(self.labels) != n:
            raise ValueError(f"{n} samples but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Tensor) -> Samples:
        """The samples at ``indices`` (in that order)."""
        return Samples(Subset(self.dataset, indices.tolist()), self.labels[indices])


class _Transformed(TorchDataset[tuple[Tensor, int]]):
    """Item ``(i, seed)`` of a split: its sample through the transform (augmented with ``seed``
    unless it is ``None``) and its label. Picklable, for worker processes."""

    def __init__(self, samples: Samples, transform: SampleTransform | None) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[Tensor, int]:
        index, seed = key
        sample, label = self.samples.dataset[index]
        if self.transform is None:
            return torch.as_tensor(sample), int(label)
        seeds = None if seed is None else torch.tensor([seed])
        return transform_batch(self.transform, [sample], seeds)[0], int(label)


class _Keys:
    """The batch sampler of one pass: batches of keys ``(index, seed)`` over precomputed
    ``order`` and ``seeds`` (``None``: no augmentation), built lazily batch by batch."""

    def __init__(self, order: Tensor, seeds: Tensor | None, batch_size: int) -> None:
        self.order, self.seeds, self.batch_size = order, seeds, batch_size

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        for start in range(0, len(self.order), self.batch_size):
            index = self.order[start : start + self.batch_size].tolist()
            seeds: Sequence[int | None] = (
                [None] * len(index) if self.seeds is None else self.seeds[start : start + self.batch_size].tolist()
            )
            yield list(zip(index, seeds, strict=True))


class StreamingBundle:
    """Train/validation/test splits read sample by sample through ``DataLoader``\\ s.

    ``train``/``test`` are :class:`Samples`; ``val`` the source's validation split, else
    ``val_fraction`` of ``train`` is held out (:func:`~snnarena.data.validation_split` with
    ``seed``: the same samples :class:`~snnarena.data.DataBundle` holds out). ``transform`` turns
    a stored sample into the input (``None``: samples already are float-able tensors);
    ``workers`` is the number of loader processes (``0``: read in this process). ``input_shape``
    is that of the transformed first test sample (read once, here), without its leading ``T``
    for temporal samples (``encoding="none"``).
    """

    def __init__(
        self,
        train: Samples,
        test: Samples,
        *,
        T: int,
        n_classes: int,
        encoding: Encoding,
        seed: int,
        transform: SampleTransform | None = None,
        val: Samples | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        workers: int = 0,
        task: str = "classification",
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if val is None:
            kept, held = validation_split(train.labels, val_fraction, seed)
            train, val = train.subset(kept), train.subset(held)
        self.train, self.val, self.test = train, val, test
        self.transform = transform
        self.encoding: Encoding = encoding
        self.seed = seed
        self.workers = workers
        first, _ = _Transformed(test, transform)[0, None]
        steps = first.shape[0] if first.dim() else 0
        if encoding == "none" and steps != T:
            raise ValueError(f"temporal samples have {steps} steps, expected T={T}")
        self._info = DataInfo(
            tuple(first.shape[1:] if encoding == "none" else first.shape),
            n_classes,
            T,
            len(train),
            len(test),
            task=encoded_task(task, encoding),
            n_val=len(val),
        )

    @property
    def info(self) -> DataInfo:
        return self._info

    def _loader(self, samples: Samples, keys: Iterable[list[tuple[int, int | None]]]) -> DataLoader[Any]:
        """A loader over ``samples`` batched by ``keys``; its own generator seeds the workers, so
        reading never draws from torch's global random state."""
        return DataLoader(
            _Transformed(samples, self.transform),
            batch_sampler=keys,
            num_workers=self.workers,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled, augmented (when the transform augments) batches ``([T, B, ...], [B])`` in
        the order of :func:`~snnarena.data.training_order`; the last partial batch is dropped
        when the split has at least one full batch."""
        augment = self.transform is not None and self.transform.augments
        order, seeds = training_order(len(self.train), batch_size, generator, augment)
        for x, y in self._loader(self.train, _Keys(order, seeds, batch_size)):
            yield encode(x, self.info.T, self.encoding, generator), y

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Validation batches in order, encoded with a generator fixed by the bundle's seed."""
        return self._fixed_batches(self.val, batch_size, "val")

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Test batches in order, encoded with a generator fixed by the bundle's seed."""
        return self._fixed_batches(self.test, batch_size, "test")

    def _fixed_batches(
        self, samples: Samples, batch_size: int, split: Literal["val", "test"]
    ) -> Iterator[tuple[Tensor, Tensor]]:
        generator = evaluation_generator(self.seed, split)
        keys = _Keys(torch.arange(len(samples)), None, batch_size)
        for x, y in self._loader(samples, keys):
            yield encode(x, self.info.T, self.encoding, generator), y
