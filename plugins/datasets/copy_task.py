"""``copy``: the copy (copying-memory) task of Sparse Attentive Backtracking (Ke et al., NeurIPS 2018).

A sample of ``T`` steps shows ``length`` random symbols, waits, and asks for them back::

    step   0 .. length−1        length .. T−length−2   T−length−1   T−length .. T−1
    input  s_1 .. s_length      blank (0)              marker       blank (0)
    target −100 (not scored)    −100                   −100         s_1 .. s_length

Symbols are drawn uniformly from ``1 .. n_symbols`` (8 by default), the blank is code ``0`` and the
marker code ``n_symbols + 1`` (9), so the input is one-hot over ``n_symbols + 2`` codes (``[T, 10]``,
stored as ``uint8``). The delay, the steps between the last symbol and the first recall step, is
``T − 2·length`` steps long, the marker being its last step, so ``T ≥ 2·length + 1``. SAB's release code
writes ``T`` for that delay: its ``T = 100`` is ``T = 120`` here (with ``length = 10``).

Task ``per_step_classification``: targets ``[T]`` per sample (batches ``[T, B]``) with
``n_symbols + 1`` classes whose index is the code (class ``s`` is symbol ``s``; class 0, the blank,
is the release code's target before the recall and is never scored here). Only the ``length``
recall steps are scored (``−100`` elsewhere, cross-entropy's ``ignore_index``), so accuracy is the
paper's measure, the share of correctly recalled symbols. Chance level is ``1/n_symbols`` (1/8;
cross-entropy ``ln 8 ≈ 2.08`` for a memoryless model). Train and test samples come from two
independent generators of the seed; ``val_fraction`` of the training samples is held out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from snnarena.data import DataBundle, Dataset
from snnarena.params import Param
from snnarena.task import IGNORE_INDEX

from ._common import N_TEST_SEQUENCES, N_TRAIN_SEQUENCES, STREAM_DATA, VAL_FRACTION, rng
from .seq_digits import SequenceLengthError

BLANK = 0


def check_T(length: int, T: int) -> str | None:
    """Why a copy sequence of ``length`` symbols cannot be asked back after ``T`` steps, or ``None``."""
    if T < 2 * length + 1:
        return (
            f"copy: T={T} is too short for length={length} (symbols, a delay with the marker, then the recall); "
            f"use T >= {2 * length + 1} (2·length + 1), or a smaller length"
        )
    return None


def make_copy(n: int, length: int, n_symbols: int, T: int, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` copy samples: inputs ``[n, T, n_symbols + 2]`` (one-hot ``uint8``) and targets ``[n, T]``
    (``int64``: the symbols on the last ``length`` steps, ``IGNORE_INDEX`` elsewhere)."""
    symbols = gen.integers(1, n_symbols + 1, size=(n, length))
    codes = np.full((n, T), BLANK, dtype=np.int64)
    codes[:, :length] = symbols
    codes[:, T - length - 1] = n_symbols + 1  # the marker, one step before the recall window
    x = np.eye(n_symbols + 2, dtype=np.uint8)[codes]
    y = np.full((n, T), IGNORE_INDEX, dtype=np.int64)
    y[:, T - length :] = symbols
    return x, y


class Copy(Dataset):
    """SAB's copy task: remember ``length`` symbols over a delay, recall them after a marker."""

    name = "copy"
    task = "per_step_classification"
    PARAMS = (
        Param("length", "int", 10, "symbols to remember (and recall)", low=1, high=10_000),
        Param("n_symbols", "int", 8, "alphabet size: symbols are 1 .. n_symbols", low=2, high=1000),
        N_TRAIN_SEQUENCES,
        N_TEST_SEQUENCES,
        VAL_FRACTION,
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return int(params["n_symbols"]) + 2

    @classmethod
    def check_T(cls, params: Mapping[str, Any], T: int) -> str | None:
        return check_T(int(params["length"]), T)

    def build(self, T: int, seed: int) -> DataBundle:
        p = self.params
        length, n_symbols = int(p["length"]), int(p["n_symbols"])
        reason = check_T(length, T)
        if reason:
            raise SequenceLengthError(reason)
        train_gen, test_gen = rng(seed, STREAM_DATA).spawn(2)
        x_train, y_train = make_copy(int(p["n_train"]), length, n_symbols, T, train_gen)
        x_test, y_test = make_copy(int(p["n_test"]), length, n_symbols, T, test_gen)
        return DataBundle(
            torch.from_numpy(x_train),
            torch.from_numpy(y_train),
            torch.from_numpy(x_test),
            torch.from_numpy(y_test),
            T=T,
            n_classes=n_symbols + 1,
            encoding="none",
            seed=seed,
            val_fraction=float(p["val_fraction"]),
            task=self.task,
        )
