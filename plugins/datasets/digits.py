"""``digits``: scikit-learn's 8x8 handwritten digits (bundled with scikit-learn, no download).

1797 grey-level images of the digits 0-9 (about 180 per class), pixel values 0..16 scaled to
``[0, 1]``. Samples are ``[64]`` (``flatten=true``) or ``[1, 8, 8]``; batches are
``[T, B, 64]`` or ``[T, B, 1, 8, 8]``, coded over ``T`` steps by ``direct`` (the pixel values at
every step) or ``rate`` (Bernoulli spikes with the pixel value as probability). The train/test
split is stratified by class and drawn from the seed; ``val_fraction`` of the training part is
then held out for validation, also stratified.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from snnarena.data import ENCODINGS, DataBundle, Dataset
from snnarena.params import Param

from ._common import VAL_FRACTION, as_labels, as_tensor, stratified_split


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    """Images ``[1797, 8, 8]`` in ``[0, 1]`` (float32) and labels ``[1797]`` (int64), read-only."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0).reshape(-1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


class Digits(Dataset):
    """scikit-learn 8x8 digits (1797 samples, 10 classes), static, direct or rate coded."""

    name = "digits"
    PARAMS = (
        Param(
            "encoding",
            "str",
            "rate",
            "direct (pixels as current), rate (Bernoulli spikes) or static (the constant input of a relaxing network)",
            choices=ENCODINGS,
        ),
        Param("flatten", "bool", True, "samples [64] (true) or images [1, 8, 8] (false, for conv nets)"),
        Param("test_fraction", "float", 0.25, "share of each class held out for testing", low=0.01, high=0.99),
        VAL_FRACTION,
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return 64

    def build(self, T: int, seed: int) -> DataBundle:
        images, labels = _load()
        train, test = stratified_split(labels, float(self.params["test_fraction"]), seed)
        shape = (64,) if self.params["flatten"] else (1, 8, 8)
        x = images.reshape(len(images), *shape)
        return DataBundle(
            as_tensor(x[train]),
            as_labels(labels[train]),
            as_tensor(x[test]),
            as_labels(labels[test]),
            T=T,
            n_classes=10,
            encoding=self.params["encoding"],
            seed=seed,
            val_fraction=float(self.params["val_fraction"]),
        )
