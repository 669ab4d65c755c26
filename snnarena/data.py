"""Base class of the dataset plugins and the in-memory bundle they return.

A dataset plugin builds a :class:`DataBundle` for a number of time steps ``T`` and a seed. The
bundle yields batches ``(x, y)`` with ``x`` of shape ``[T, B, *input_shape]`` (float) and ``y``
of shape ``[B]`` (class indices). The same seed gives the same data, split and batches.

Static samples (images, vectors) are turned into ``T`` steps by an encoding:

* ``direct``: the sample is the input current at every step, ``x[t] = u``;
* ``rate``: Bernoulli (Poisson) spikes, ``x[t] ~ Bernoulli(clamp(u, 0, 1))``, redrawn per batch;
  test batches use a fixed generator so evaluation is deterministic.

Temporal samples (already ``[N, T, ...]``) are passed through unchanged (``encoding="none"``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from snnarena.params import Param, params_of

Encoding = Literal["direct", "rate", "none"]
ENCODINGS: tuple[str, ...] = ("direct", "rate")


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about the data: per-step input shape, classes and ``T``."""

    input_shape: tuple[int, ...]
    n_classes: int
    T: int
    n_train: int
    n_test: int
    task: str = "classification"


class DataBundle:
    """Train/test tensors held in memory, encoded over time batch by batch.

    ``x_train``/``x_test`` are ``[N, *input_shape]`` for static data or ``[N, T, *input_shape]``
    for temporal data (``encoding="none"``); ``y`` are ``[N]`` class indices.
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
    ) -> None:
        if encoding == "none" and x_train.shape[1] != T:
            raise ValueError(f"temporal data has {x_train.shape[1]} steps, expected T={T}")
        # inputs keep their storage dtype (uint8/bool event frames stay small); batches are float
        self.x_train, self.y_train = x_train, y_train.long()
        self.x_test, self.y_test = x_test, y_test.long()
        self.encoding = encoding
        self.seed = seed
        shape = tuple(x_train.shape[2:] if encoding == "none" else x_train.shape[1:])
        self.info = DataInfo(shape, n_classes, T, len(x_train), len(x_test))

    def _encode(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """``[B, ...]`` (or ``[B, T, ...]``) → float ``[T, B, ...]``."""
        T = self.info.T
        x = x.float()
        if self.encoding == "none":
            return x.transpose(0, 1).contiguous()
        if self.encoding == "direct":
            return x.unsqueeze(0).expand(T, *x.shape).contiguous()
        p = x.clamp(0.0, 1.0).unsqueeze(0).expand(T, *x.shape)
        return torch.bernoulli(p, generator=generator)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled training batches ``([T, B, ...], [B])``; the last partial batch is dropped
        when the split has at least one full batch."""
        n = len(self.x_train)
        order = torch.randperm(n, generator=generator)
        stop = n - n % batch_size if n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield self._encode(self.x_train[idx], generator), self.y_train[idx]

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Test batches in order, encoded with a generator fixed by the bundle's seed."""
        generator = torch.Generator().manual_seed(self.seed + 7919)
        for start in range(0, len(self.x_test), batch_size):
            xb = self.x_test[start : start + batch_size]
            yield self._encode(xb, generator), self.y_test[start : start + batch_size]


class Dataset:
    """A dataset plugin: ``Dataset(**params).build(T=, seed=) -> DataBundle``."""

    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **params: Any) -> None:
        """Validate ``params`` against ``PARAMS`` (raising ``ParamError``) and fill in defaults."""
        self.params = params_of(type(self)).resolve(params)

    def build(self, T: int, seed: int) -> DataBundle:
        raise NotImplementedError

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int | None:
        """Input values per sample and time step (the product of ``DataInfo.input_shape``) for
        resolved ``params``, known without loading any data; ``None`` when it cannot be told.

        Suite validation uses it to refuse a ``T`` whose input batch ``[T, B, ...]`` cannot fit in
        memory. Override it when the size follows from the parameters (it must be cheap).
        """
        return None

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> list[str]:
        """Problems with the local files this dataset reads for resolved ``params`` (empty: fine).

        Called by suite validation for every dataset variant, so a missing or damaged file stops a
        run before any training. Check cheaply (existence, headers, sizes; never a full load);
        each problem is one line naming the path and saying how to fix it.
        """
        return []
