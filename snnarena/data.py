"""Base class of the dataset plugins and the in-memory bundle they return.

A dataset plugin builds a :class:`DataBundle` for a number of time steps ``T`` and a seed. The
bundle holds three splits, train / validation / test, and yields batches ``(x, y)`` with ``x`` of
shape ``[T, B, *input_shape]`` (float) and ``y`` of shape ``[B]`` (class indices). The same seed
gives the same data, splits and batches.

Validation is where learning curves and weight selection look; test is read once per cell. A
dataset whose source has a validation split passes it (``val=(x, y)``); otherwise the bundle
carves ``val_fraction`` of the training data (:func:`validation_split`: seeded, stratified by
class), so test data is never used for training or selection.

Static samples (images, vectors) are turned into ``T`` steps by an encoding:

* ``direct``: the sample is the input current at every step, ``x[t] = u``;
* ``rate``: Bernoulli (Poisson) spikes, ``x[t] ~ Bernoulli(clamp(u, 0, 1))``, redrawn per batch;
  validation and test batches use fixed generators so evaluation is deterministic.

Temporal samples (already ``[N, T, ...]``) are passed through unchanged (``encoding="none"``).

``static``: the sample is the constant input of a network that relaxes to a fixed point (the
``static_classification`` task, :mod:`snnarena.task`): ``x[t] = u`` like ``direct``, but batches
are a broadcast view of ``u [B, ...]`` (no copy per step) and ``T`` is the relaxation length; the
network is judged on its last step.

Graph data (one graph, full batch) is a :class:`snnarena.graph.GraphBundle`, a ``DataBundle``
whose batches are the whole graph; its ``DataInfo.graph`` carries the edges models read.

Data too large for memory is a :class:`snnarena.streaming.StreamingBundle`, which reads samples
through ``torch`` data loaders. Every bundle is a :class:`Bundle`: ``info`` and the three batch
iterators are all the host reads. A :class:`SampleTransform` turns a stored sample (an ``uint8``
image, a decoded file) into the model's input, with a seeded random augmentation for training
samples: ``train_batches`` draws one augmentation seed per sample from its generator right after
the order, so in-memory and streaming bundles give the same batches for the same generator.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import torch
from torch import Tensor

from snnarena.params import Param, params_of

if TYPE_CHECKING:
    from snnarena.graph import Graph

Encoding = Literal["direct", "rate", "none", "static"]
#: The encodings a dataset of static samples offers its users (``static`` changes the task too).
ENCODINGS: tuple[str, ...] = ("direct", "rate", "static")
#: Share of the training data carved out for validation when the source has no validation split.
DEFAULT_VAL_FRACTION = 0.1
#: Offsets of the seeds of the fixed generators (validation split, validation and test encoding).
_SPLIT_SEED, _VAL_SEED, _TEST_SEED = 7877, 7907, 7919
#: The environment variable naming the folder real datasets are read from.
DATA_ROOT_ENV = "SNNARENA_DATA"
#: Where real datasets are read from when neither a ``root`` parameter nor the variable says.
DEFAULT_DATA_ROOT = "~/.snnarena/data"


#: Augmentation seeds are drawn in ``[0, AUGMENT_SEED_BOUND)``.
AUGMENT_SEED_BOUND = 2**62


def data_root(given: str | None = None) -> Path:
    """The folder a dataset reads its files from: ``given`` (its ``root`` parameter), else
    ``$SNNARENA_DATA`` (which ``snnarena run --data-root`` and a suite's ``data_root`` set), else
    ``~/.snnarena/data``; user-expanded."""
    return Path(given or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser()


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about the data: per-step input shape, classes (for a regression
    task: output values per step) and ``T``; the sizes of the train, test and validation splits;
    the task (one of :data:`snnarena.task.TASK_KINDS`), which fixes the targets' shape; for graph
    tasks, the graph whose nodes are the batch (``input_shape`` is then the node features')."""

    input_shape: tuple[int, ...]
    n_classes: int
    T: int
    n_train: int
    n_test: int
    task: str = "classification"
    n_val: int = 0
    graph: Graph | None = field(default=None, compare=False)


def encoded_task(task: str, encoding: str) -> str:
    """The task of data of ``task`` presented with ``encoding``: the ``static`` encoding makes
    (sequence) classification data ``static_classification``; anything else keeps its task."""
    return "static_classification" if encoding == "static" and task == "classification" else task


def validation_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted indices ``(train, val)`` of a partition of ``range(len(y))`` with
    ``n_val = round(N * fraction)`` (at least 1, at most ``N - 1``) validation samples.

    Class indices (``y`` of shape ``[N]``, integer) are stratified: each class ``c`` of ``n_c``
    samples gives ``n_c * n_val / N`` of them, rounded by largest remainder (ties in a seeded
    random order) so the quotas add up to ``n_val``; other targets are split uniformly. The
    samples are drawn from ``seed`` alone.
    """
    n = len(y)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {fraction}")
    if n < 2:
        raise ValueError(f"cannot carve a validation split from {n} training sample(s); pass val=(x, y) instead")
    n_val = min(max(round(n * fraction), 1), n - 1)
    generator = torch.Generator().manual_seed((seed + _SPLIT_SEED) % 2**63)
    order = torch.randperm(n, generator=generator)
    if y.dim() == 1 and not y.is_floating_point():
        chosen = _stratified_pick(y, order, n_val, generator)
    else:
        chosen = order[:n_val]
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[chosen] = True
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


def _stratified_pick(y: Tensor, order: Tensor, n_val: int, generator: torch.Generator) -> Tensor:
    """``n_val`` indices of ``order`` (a permutation), each class's quota taken in that order."""
    classes, counts = torch.unique(y, return_counts=True)
    quota = counts.double() * n_val / len(y)
    take = quota.floor().long()
    short = n_val - int(take.sum())
    if short:  # largest remainders first; equal remainders in a seeded random order of the classes
        shuffled_classes = torch.randperm(len(classes), generator=generator)
        remainders = (quota - take)[shuffled_classes]
        take[shuffled_classes[torch.sort(remainders, descending=True, stable=True).indices[:short]]] += 1
    shuffled = y[order]
    return torch.cat([order[shuffled == c][: int(k)] for c, k in zip(classes, take, strict=True)])


def _targets(y: Tensor) -> Tensor:
    """Stored targets: class indices as ``int64``, regression targets (floating point) unchanged."""
    return y if y.is_floating_point() else y.long()


def _time_first(y: Tensor) -> Tensor:
    """A batch of targets: ``[B]`` unchanged; per-step targets ``[B, T, ...]`` → ``[T, B, ...]``."""
    return y if y.dim() == 1 else y.transpose(0, 1).contiguous()


def encode(x: Tensor, T: int, encoding: Encoding, generator: torch.Generator) -> Tensor:
    """A batch over time: ``[B, ...]`` (or ``[B, T, ...]`` for ``encoding="none"``) → float
    ``[T, B, ...]`` coded by ``encoding`` (see the module docstring); ``rate`` draws its spikes
    from ``generator``."""
    x = x.float()
    if encoding == "none":
        return x.transpose(0, 1).contiguous()
    if encoding == "direct":
        return x.unsqueeze(0).expand(T, *x.shape).contiguous()
    if encoding == "static":
        return x.unsqueeze(0).expand(T, *x.shape)
    p = x.clamp(0.0, 1.0).unsqueeze(0).expand(T, *x.shape)
    return torch.bernoulli(p, generator=generator)


def evaluation_generator(seed: int, split: Literal["val", "test"]) -> torch.Generator:
    """The fixed generator that encodes a bundle's validation or test batches (from its seed)."""
    return torch.Generator().manual_seed(seed + (_VAL_SEED if split == "val" else _TEST_SEED))


def training_order(n: int, batch_size: int, generator: torch.Generator, augment: bool) -> tuple[Tensor, Tensor | None]:
    """The samples of one training epoch and their augmentation seeds: ``(order, seeds)``.

    ``order`` is ``randperm(n)`` cut to whole batches when there is at least one full batch;
    ``seeds`` (``None`` without augmentation) holds one seed per position of ``order``, drawn
    from ``generator`` right after the permutation. Every bundle draws them this way."""
    order = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if n >= batch_size else n
    seeds = torch.randint(0, AUGMENT_SEED_BOUND, (n,), generator=generator) if augment else None
    return order[:stop], None if seeds is None else seeds[:stop]


class SampleTransform(Protocol):
    """Turns stored samples into the model's inputs, a batch at a time.

    ``samples`` are a tensor ``[B, ...]`` of stored samples (``uint8`` images, say) or a
    sequence of ``B`` stored samples (decoded files); the result is float ``[B, *input_shape]``.
    ``augments`` tells whether :meth:`train` is random; if not, bundles call :meth:`eval` for
    training samples too and draw no augmentation seeds."""

    @property
    def augments(self) -> bool: ...

    def train(self, samples: Any, generators: Sequence[torch.Generator]) -> Tensor:
        """Training inputs, sample ``i`` randomly augmented with ``generators[i]`` (its own seed)."""
        ...

    def eval(self, samples: Any) -> Tensor:
        """Inputs as evaluated (and trained, without augmentation): deterministic."""
        ...


def transform_batch(transform: SampleTransform, samples: Any, seeds: Tensor | None) -> Tensor:
    """``transform.train`` with one generator per sample seeded by ``seeds [B]``, or
    ``transform.eval`` for ``None``: a sample's input depends only on the sample and its seed,
    however the samples are batched."""
    if seeds is None:
        return transform.eval(samples)
    return transform.train(samples, [torch.Generator().manual_seed(int(seed)) for seed in seeds])


class Bundle(Protocol):
    """What the host reads from a built dataset: ``info`` and batches ``([T, B, ...], y)``.

    :class:`DataBundle` (in memory), :class:`snnarena.graph.GraphBundle` (one graph) and
    :class:`snnarena.streaming.StreamingBundle` (read through data loaders) implement it."""

    @property
    def info(self) -> DataInfo: ...

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled training batches (order, augmentation and spikes drawn from ``generator``)."""
        ...

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Validation batches in order, the same on every call."""
        ...

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Test batches in order, the same on every call."""
        ...


class DataBundle:
    """Train/validation/test tensors held in memory, encoded over time batch by batch.

    ``x_train``/``x_test`` are ``[N, *input_shape]`` for static data or ``[N, T, *input_shape]``
    for temporal data (``encoding="none"``); ``y`` are ``[N]`` class indices. ``val=(x_val,
    y_val)`` is the source's validation split, shaped alike; without it ``val_fraction`` of the
    given training data becomes the validation split (:func:`validation_split` with ``seed``),
    and ``x_train``/``y_train`` keep the rest. With a ``transform`` the tensors hold stored
    samples (``uint8`` images, say) that it turns into inputs batch by batch, augmenting training
    samples when it :attr:`~SampleTransform.augments`; ``input_shape`` is then its output's.
    """

    def __init__(
        self,
        x_train: Tensor,
        y_train: Tensor,
        x_test: Tensor,
        y_test: Tensor,
        *,
        T: int,
        n_classes: int,
        encoding: Encoding,
        seed: int,
        val: tuple[Tensor, Tensor] | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        task: str = "classification",
        transform: SampleTransform | None = None,
    ) -> None:
        if val is None:
            train, held = validation_split(y_train, val_fraction, seed)
            val = (x_train[held], y_train[held])
            x_train, y_train = x_train[train], y_train[train]
        for name, x in (("training", x_train), ("validation", val[0]), ("test", x_test)):
            if encoding == "none" and x.shape[1] != T:
                raise ValueError(f"temporal {name} data has {x.shape[1]} steps, expected T={T}")
        # inputs keep their storage dtype (uint8/bool event frames stay small); batches are float
        self.x_train, self.y_train = x_train, _targets(y_train)
        self.x_val, self.y_val = val[0], _targets(val[1])
        self.x_test, self.y_test = x_test, _targets(y_test)
        self.encoding = encoding
        self.seed = seed
        self.transform = transform
        if transform is not None:
            shape = tuple(transform.eval(x_train[:1]).shape[1:])
        else:
            shape = tuple(x_train.shape[2:] if encoding == "none" else x_train.shape[1:])
        task = encoded_task(task, encoding)
        self.info = DataInfo(shape, n_classes, T, len(x_train), len(x_test), task=task, n_val=len(self.x_val))

    def _encode(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """``[B, ...]`` (or ``[B, T, ...]``) → float ``[T, B, ...]``."""
        return encode(x, self.info.T, self.encoding, generator)

    def _inputs(self, x: Tensor, seeds: Tensor | None) -> Tensor:
        """Stored samples ``[B, ...]`` → inputs through the transform (if any), augmented by ``seeds``."""
        return x if self.transform is None else transform_batch(self.transform, x, seeds)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled (and, with an augmenting transform, augmented) training batches
        ``([T, B, ...], [B])`` in the order of :func:`training_order`; the last partial batch is
        dropped when the split has at least one full batch."""
        augment = self.transform is not None and self.transform.augments
        order, seeds = training_order(len(self.x_train), batch_size, generator, augment)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch_seeds = None if seeds is None else seeds[start : start + batch_size]
            x = self._inputs(self.x_train[idx], batch_seeds)
            yield self._encode(x, generator), _time_first(self.y_train[idx])

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Validation batches in order, encoded with a generator fixed by the bundle's seed."""
        return self._fixed_batches(self.x_val, self.y_val, batch_size, evaluation_generator(self.seed, "val"))

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Test batches in order, encoded with a generator fixed by the bundle's seed."""
        return self._fixed_batches(self.x_test, self.y_test, batch_size, evaluation_generator(self.seed, "test"))

    def _fixed_batches(
        self, x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(x), batch_size):
            inputs = self._inputs(x[start : start + batch_size], None)
            yield self._encode(inputs, generator), _time_first(y[start : start + batch_size])


class Dataset:
    """A dataset plugin: ``Dataset(**params).build(T=, seed=) -> Bundle`` (usually a :class:`DataBundle`)."""

    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    #: The task of the data (:data:`snnarena.task.TASK_KINDS`) when it does not depend on the
    #: parameters; see :meth:`task_for`.
    task: ClassVar[str] = "classification"

    def __init__(self, **params: Any) -> None:
        """Validate ``params`` against ``PARAMS`` (raising ``ParamError``) and fill in defaults."""
        self.params = params_of(type(self)).resolve(params)

    def build(self, T: int, seed: int) -> Bundle:
        raise NotImplementedError

    @classmethod
    def task_for(cls, params: Mapping[str, Any]) -> str:
        """The task of the data built with resolved ``params`` (default: :attr:`task`), known
        before building so suite validation can refuse a loss form, model, method or metric that
        does not fit it; ``build`` must give ``DataInfo.task`` the same. Override it when a
        parameter changes the task; the default already maps ``encoding = "static"`` to
        ``static_classification`` (:func:`encoded_task`)."""
        return encoded_task(cls.task, str(params.get("encoding", "")))

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int | None:
        """Input values per sample and time step (the product of ``DataInfo.input_shape``) for
        resolved ``params``, known without loading any data; ``None`` when it cannot be told.

        Suite validation uses it to refuse a ``T`` whose input batch ``[T, B, ...]`` cannot fit in
        memory. Override it when the size follows from the parameters (it must be cheap).
        """
        return None

    @classmethod
    def check_T(cls, params: Mapping[str, Any], T: int) -> str | None:
        """Why this dataset cannot present its samples in ``T`` steps for resolved ``params``, or
        ``None`` (the default: any ``T``). Called by suite validation for every dataset variant and
        ``T``, so an impossible length is refused before training; ``build`` should refuse it too."""
        return None

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> list[str]:
        """Problems with the local files this dataset reads for resolved ``params`` (empty: fine).

        Called by suite validation for every dataset variant, so a missing or damaged file stops a
        run before any training. Check cheaply (existence, headers, sizes; never a full load);
        each problem is one line naming the path and saying how to fix it.
        """
        return []
