"""``seq_digits``: scikit-learn's 8x8 digits read as a sequence, one row (or column) per step.

The 1797 images of ``digits`` (pixel values scaled to ``[0, 1]``) become sequences of their 8 rows
(``order="rows"``) or 8 columns (``order="columns"``): a sample is ``[T, 8]`` and the 8 pixels of
row ``r`` are the input current of the ``T/8`` consecutive steps ``r·T/8 .. (r+1)·T/8 − 1``, so
``T`` must be a multiple of 8 (``T = 8``: one row per step). A sequence classification task:
batches ``[T, B, 8]``, labels ``[B]`` (the digit, known only once the whole image has been seen).
The train/test split is stratified by class and drawn from the seed (the same as ``digits``);
``val_fraction`` of the training part is then held out for validation, also stratified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from snnarena.data import DataBundle, Dataset
from snnarena.errors import ConfigurationError
from snnarena.params import Param

from ._common import VAL_FRACTION, as_labels, as_tensor, stratified_split
from .digits import _load

#: Rows (and columns) of an image: the shortest sequence, and what ``T`` must be a multiple of.
LINES = 8


class SequenceLengthError(ConfigurationError, ValueError):
    """``T`` is not a length the dataset can present its samples in."""


def check_T(T: int) -> str | None:
    """Why ``seq_digits`` cannot be built with ``T`` steps, or ``None``."""
    if T < LINES or T % LINES:
        return (
            f"seq_digits: T={T} is not a multiple of {LINES} (each image is shown one row per T/{LINES} steps); "
            f"use T = {LINES}, {2 * LINES}, {3 * LINES}, ..."
        )
    return None


class SequentialDigits(Dataset):
    """scikit-learn 8x8 digits presented row by row (or column by column): samples ``[T, 8]``."""

    name = "seq_digits"
    PARAMS = (
        Param("order", "str", "rows", "present the image row by row or column by column", choices=("rows", "columns")),
        Param("test_fraction", "float", 0.25, "share of each class held out for testing", low=0.01, high=0.99),
        VAL_FRACTION,
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return LINES

    @classmethod
    def check_T(cls, params: Mapping[str, Any], T: int) -> str | None:
        return check_T(T)

    def build(self, T: int, seed: int) -> DataBundle:
        reason = check_T(T)
        if reason:
            raise SequenceLengthError(reason)
        images, labels = _load()  # [N, 8, 8] (row, column)
        lines = images if self.params["order"] == "rows" else images.transpose(0, 2, 1)
        x = np.repeat(lines, T // LINES, axis=1)  # [N, T, 8]: line r fills steps r·T/8 .. (r+1)·T/8 − 1
        train, test = stratified_split(labels, float(self.params["test_fraction"]), seed)
        return DataBundle(
            as_tensor(x[train]),
            as_labels(labels[train]),
            as_tensor(x[test]),
            as_labels(labels[test]),
            T=T,
            n_classes=10,
            encoding="none",
            seed=seed,
            val_fraction=float(self.params["val_fraction"]),
        )
