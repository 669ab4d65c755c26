"""``adding``: the adding problem (Hochreiter & Schmidhuber 1997, in the form used by SAB and Le et al. 2015).

A sample is ``[T, 2]`` (float): channel 0 holds values ``u_t ~ U(0, 1)``, channel 1 is a marker
that is 1 at exactly two steps, ``a`` drawn uniformly from the first half ``0 .. ⌊T/2⌋−1`` and
``b`` from the second half ``⌊T/2⌋ .. T−1``, and 0 elsewhere. The target is their sum
``u_a + u_b`` at the last step only.

Task ``per_step_regression``: targets ``[T, 1]`` per sample (batches ``[T, B, 1]``, ``D = 1``
output, ``DataInfo.n_classes = 1``), NaN on every step but the last, so the loss and score are the
mean squared error at the last step. Baselines: predicting the constant 1.0 gives MSE
``Var(u_a + u_b) = 1/6 ≈ 0.167``; a model that reads only the second marked value (predicting
``u_b + 0.5``) gives ``1/12 ≈ 0.083``. ``T ≥ 2``. Train and test samples come from two independent
generators of the seed; ``val_fraction`` of the training samples is held out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from snnarena.data import DataBundle, Dataset

from ._common import N_TEST_SEQUENCES, N_TRAIN_SEQUENCES, STREAM_DATA, VAL_FRACTION, rng
from .seq_digits import SequenceLengthError

#: MSE of the constant prediction 1.0 (the mean of the target): the variance of a sum of two U(0, 1).
BASELINE_MSE = 1.0 / 6.0


def check_T(T: int) -> str | None:
    """Why the adding problem cannot be posed in ``T`` steps, or ``None``."""
    if T < 2:
        return f"adding: T={T} is too short: each half of the sequence holds one marked value; use T >= 2"
    return None


def make_adding(n: int, T: int, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` adding samples: inputs ``[n, T, 2]`` (value, marker; ``float32``) and targets
    ``[n, T, 1]`` (``float32``: the sum of the two marked values at step ``T − 1``, NaN elsewhere)."""
    half = T // 2
    x = np.zeros((n, T, 2), dtype=np.float32)
    x[:, :, 0] = gen.random((n, T), dtype=np.float32)
    rows = np.arange(n)
    first = gen.integers(0, half, size=n)
    second = gen.integers(half, T, size=n)
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = np.full((n, T, 1), np.nan, dtype=np.float32)
    y[:, T - 1, 0] = x[rows, first, 0] + x[rows, second, 0]
    return x, y


class Adding(Dataset):
    """The adding problem: regress the sum of the two marked values of a random sequence at its end."""

    name = "adding"
    task = "per_step_regression"
    PARAMS = (
        N_TRAIN_SEQUENCES,
        N_TEST_SEQUENCES,
        VAL_FRACTION,
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return 2

    @classmethod
    def check_T(cls, params: Mapping[str, Any], T: int) -> str | None:
        return check_T(T)

    def build(self, T: int, seed: int) -> DataBundle:
        p = self.params
        reason = check_T(T)
        if reason:
            raise SequenceLengthError(reason)
        train_gen, test_gen = rng(seed, STREAM_DATA).spawn(2)
        x_train, y_train = make_adding(int(p["n_train"]), T, train_gen)
        x_test, y_test = make_adding(int(p["n_test"]), T, test_gen)
        return DataBundle(
            torch.from_numpy(x_train),
            torch.from_numpy(y_train),
            torch.from_numpy(x_test),
            torch.from_numpy(y_test),
            T=T,
            n_classes=1,
            encoding="none",
            seed=seed,
            val_fraction=float(p["val_fraction"]),
            task=self.task,
        )
