"""Helpers shared by the built-in dataset plugins: seeded generators, splits, local-file errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from snnarena.data import DEFAULT_DATA_ROOT, DEFAULT_VAL_FRACTION
from snnarena.errors import DataFilesError
from snnarena.params import Param

#: Stream ids that keep the random draws of one build independent of each other.
STREAM_DATA, STREAM_SPLIT, STREAM_TRAIN_SUBSET, STREAM_TEST_SUBSET = 0, 1, 2, 3

#: The parameter every built-in dataset passes to ``DataBundle(val_fraction=...)``: none of their
#: sources has a validation split, so one is carved from the training data.
VAL_FRACTION = Param(
    "val_fraction",
    "float",
    DEFAULT_VAL_FRACTION,
    "share of the training data held out for validation (seeded, stratified by class)",
    low=0.01,
    high=0.9,
)
#: Subsets of the file-backed datasets, drawn by the seed.
MAX_TRAIN = Param("max_train", "int", None, "use this many training samples (drawn by the seed)", low=1, nullable=True)
MAX_TEST = Param("max_test", "int", None, "use this many test samples (drawn by the seed)", low=1, nullable=True)
#: Loader processes of the datasets that can stream (``stream = true``).
WORKERS = Param(
    "workers",
    "int",
    0,
    "data-loader worker processes when streaming (0: read in the training process)",
    low=0,
    high=512,
)


def root_param(layout: str) -> Param:
    """The ``root`` parameter of a file-backed dataset: where ``layout`` lies (default:
    :func:`snnarena.data.data_root`)."""
    return Param(
        "root",
        "str",
        None,
        f"data root holding {layout} (default: $SNNARENA_DATA, else {DEFAULT_DATA_ROOT})",
        nullable=True,
    )


def stream_param(what: str) -> Param:
    """The ``stream`` parameter: read ``what`` through data loaders (:mod:`snnarena.streaming`)."""
    return Param("stream", "bool", False, f"read {what} through data loaders instead of holding them in memory")


#: Sizes of the generated sequence datasets (``copy``, ``adding``, ``store_recall``).
N_TRAIN_SEQUENCES = Param(
    "n_train", "int", 4096, "training sequences (validation is carved from them)", low=2, high=10_000_000
)
N_TEST_SEQUENCES = Param("n_test", "int", 1024, "test sequences", low=1, high=10_000_000)


def rng(seed: int, stream: int) -> np.random.Generator:
    """A NumPy generator fixed by ``(seed, stream)``; any integer seed (negative too) is accepted."""
    return np.random.default_rng([seed % 2**63, stream])


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` holding ``round(n_c * test_fraction)`` samples of each class ``c``
    in the test part (at least one in each part for a class with two or more samples).

    Both index arrays are shuffled; the split depends only on ``y``, ``test_fraction`` and ``seed``.
    """
    gen = rng(seed, STREAM_SPLIT)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = gen.permutation(np.flatnonzero(y == c))
        n_test = round(len(idx) * test_fraction)
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return gen.permutation(np.concatenate(train)), gen.permutation(np.concatenate(test))


def subset(n: int, limit: int | None, seed: int, stream: int) -> np.ndarray:
    """All of ``range(n)`` when ``limit`` is ``None`` or ``>= n``, else ``limit`` indices drawn
    without replacement by the seed (kept in increasing order)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(rng(seed, stream).choice(n, size=limit, replace=False))


def as_tensor(x: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
    """A fresh tensor (never sharing memory with ``x``, which may be cached)."""
    return torch.tensor(np.asarray(x), dtype=dtype)


def as_labels(y: np.ndarray) -> Tensor:
    """Class indices as a fresh ``int64`` tensor."""
    return torch.tensor(np.asarray(y), dtype=torch.long)


class MissingDataFiles(DataFilesError, FileNotFoundError):
    """A dataset's files are not where it looks for them (the message says what and where)."""


class DamagedDataFile(DataFilesError, ValueError):
    """A dataset file is there but cannot be read (the message names it and says what to do)."""


def missing_files_error(dataset: str, root: Path, expected: Sequence[str], how: str) -> MissingDataFiles:
    """A :class:`MissingDataFiles` naming the missing files, where they were looked for and how to
    obtain them, on one line."""
    return MissingDataFiles(
        f"{dataset}: data files not found under {root.resolve()} (this dataset never downloads): "
        f"missing {', '.join(expected)}. {how}"
    )


def damaged_file_error(path: Path, what: str) -> DamagedDataFile:
    """A :class:`DamagedDataFile` for ``path``, saying to delete it and fetch it again."""
    return DamagedDataFile(f"{path}: {what}; delete it and download it again")
