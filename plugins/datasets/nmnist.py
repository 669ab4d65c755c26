"""``nmnist``: N-MNIST (Orchard et al. 2015) event streams, read by ``tonic.datasets.NMNIST``
from local files (never downloaded) and binned into ``T`` frames ``[2, 34, 34]``.

Layout (tonic's, under the data root): ``<root>/NMNIST/Train/<digit>/*.bin`` and
``<root>/NMNIST/Test/<digit>/*.bin``, the contents of N-MNIST's ``Train.zip`` and ``Test.zip``
(``tonic.datasets.NMNIST(save_to=<root>)`` writes exactly this on a machine with internet
access; the archives themselves are not needed). Each ``.bin`` file holds 40-bit events:

    byte 0: x (0..33)   byte 1: y (0..33)
    byte 2: bit 7 polarity (1 = ON), bits 6..0 timestamp bits 22..16
    bytes 3, 4: timestamp bits 15..0 (microseconds)

read by ``tonic.io.read_mnist_file``. Frames are binned by :mod:`.events` (channel 0 = OFF,
1 = ON; ``[polarity, y, x]``); samples are ``[T, 2312]`` (``flatten=true``) or
``[T, 2, 34, 34]``. ``first_saccade_only`` keeps the first of the three saccades (tonic's
option, events before 100 ms). ``max_train``/``max_test`` take a subset drawn from the seed and
``val_fraction`` of the (subset of the) training split is held out for validation, stratified
by class.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from snnarena.data import data_root
from snnarena.params import Param

from ._common import damaged_file_error, root_param
from .events import (
    TonicEventDataset,
    TonicSource,
    first_file,
    framing_params,
    offline,
    stream_params,
    subset_params,
)

EVENT_BYTES = 5
SPLITS = {"train": "Train", "test": "Test"}
SOURCE = "https://www.garrickorchard.com/datasets/n-mnist"

HOW_TO_GET = (
    f"Download Train.zip and Test.zip of N-MNIST ({SOURCE}; tonic.datasets.NMNIST fetches the same files from "
    "https://data.mendeley.com/datasets/468j46mzdv) on a machine with internet access and unzip them into "
    "<root>/NMNIST/, so that e.g. <root>/NMNIST/Train/0/00002.bin and <root>/NMNIST/Test/0/00004.bin exist "
    "(or run tonic.datasets.NMNIST(save_to=<root>) there and copy <root>/NMNIST)."
)


def first_sample(split: Path) -> Path | None:
    """The first ``split/<digit>/*.bin`` file (lowest digit, then name), or ``None``."""
    return next((found for digit in range(10) if (found := first_file(split / str(digit), "*.bin"))), None)


class NMNIST(TonicEventDataset):
    """N-MNIST neuromorphic digits from local event files (tonic), binned into T frames [2, 34, 34]."""

    name = "nmnist"
    sensor_size = (34, 34, 2)
    n_classes = 10
    how_to_get = HOW_TO_GET
    folder_name = "NMNIST"
    PARAMS = (
        root_param("NMNIST/Train/<digit>/*.bin and NMNIST/Test/<digit>/*.bin"),
        Param("flatten", "bool", True, "frames [2312] (true) or [2, 34, 34] (false, for conv nets)"),
        Param("first_saccade_only", "bool", False, "keep only the first of the three saccades (tonic's option)"),
        *framing_params(binary=True),
        *subset_params(),
        *stream_params(),
    )

    @classmethod
    def missing(cls, params: Mapping[str, Any]) -> list[str]:
        folder = cls.folder(params)
        return [f"{folder / name}/<digit 0-9>/*.bin" for name in SPLITS.values() if first_sample(folder / name) is None]

    @classmethod
    def damaged(cls, params: Mapping[str, Any]) -> list[str]:
        """The first ``.bin`` file of each split is a whole number of 5-byte events."""
        problems = []
        for name in SPLITS.values():
            sample = first_sample(cls.folder(params) / name)
            if sample is not None and sample.stat().st_size % EVENT_BYTES:
                problems.append(str(damaged_file_error(sample, "not a whole number of 5-byte N-MNIST events")))
        return problems

    def open_split(self, split: str) -> TonicSource:
        from tonic.datasets import NMNIST as TonicNMNIST

        source: TonicSource = offline(TonicNMNIST)(
            str(data_root(self.params.get("root"))),
            train=split == "train",
            first_saccade_only=bool(self.params["first_saccade_only"]),
        )
        return source

    def cache_extra(self) -> Mapping[str, Any]:
        return {"first_saccade_only": bool(self.params["first_saccade_only"])}
