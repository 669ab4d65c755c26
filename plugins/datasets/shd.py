"""``shd``: Spiking Heidelberg Digits (Cramer et al. 2020), spoken digits 0-9 in English and
German (20 classes) as spikes of 700 cochlea channels, read by ``tonic.datasets.SHD`` from local
HDF5 files and binned into ``T`` frames of 700 channel counts.

Layout (tonic's, under the data root): ``<root>/SHD/shd_train.h5`` and ``<root>/SHD/shd_test.h5``,
unzipped from ``shd_train.h5.zip`` / ``shd_test.h5.zip`` (the zips are not needed). Each file holds
``spikes/times`` (seconds) and ``spikes/units`` (channel) per sample, ``labels``, and
``extra/keys``, ``extra/speaker``. Samples are ``[T, 700]`` (``spatial_factor`` pools channels:
0.2 gives 140); the official split (speakers of the test set unseen) is kept and
``val_fraction`` of the training part is held out for validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from snnarena.data import data_root

from ._common import damaged_file_error, root_param
from .events import (
    TonicEventDataset,
    TonicSource,
    framing_params,
    offline,
    stream_params,
    subset_params,
)

FILES = {"train": "shd_train.h5", "test": "shd_test.h5"}
#: The HDF5 datasets tonic reads.
KEYS = ("spikes/times", "spikes/units", "labels", "extra/keys", "extra/speaker")
SOURCE = "https://zenkelab.org/datasets/"

HOW_TO_GET = (
    f"Download shd_train.h5.zip and shd_test.h5.zip ({SOURCE}shd_train.h5.zip, {SOURCE}shd_test.h5.zip; see "
    "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/) on a machine with internet access and unzip "
    "them into <root>/SHD/ (or run tonic.datasets.SHD(save_to=<root>) there and copy <root>/SHD)."
)


class HSDSource(TonicSource, Protocol):
    """tonic's SHD: one HDF5 file per split."""

    data_filename: str


class SHD(TonicEventDataset):
    """Spiking Heidelberg Digits (20 classes, 700 channels) from local HDF5 files (tonic), binned into T frames."""

    name = "shd"
    sensor_size = (700, 1, 1)
    n_classes = 20
    how_to_get = HOW_TO_GET
    folder_name = "SHD"
    PARAMS = (
        root_param("SHD/shd_train.h5 and SHD/shd_test.h5"),
        *framing_params(),
        *subset_params(),
        *stream_params(),
    )

    @classmethod
    def missing(cls, params: Mapping[str, Any]) -> list[str]:
        folder = cls.folder(params)
        return [str(folder / file) for file in FILES.values() if not (folder / file).is_file()]

    @classmethod
    def damaged(cls, params: Mapping[str, Any]) -> list[str]:
        """Each file opens as HDF5 and holds the datasets tonic reads."""
        import h5py

        problems = []
        for file in FILES.values():
            path = cls.folder(params) / file
            try:
                with h5py.File(path, "r") as handle:
                    absent = [key for key in KEYS if key not in handle]
            except OSError as err:
                problems.append(str(damaged_file_error(path, f"not a readable HDF5 file ({err})")))
                continue
            if absent:
                problems.append(str(damaged_file_error(path, f"lacks the HDF5 datasets {', '.join(absent)}")))
        return problems

    def open_split(self, split: str) -> TonicSource:
        from tonic.datasets import SHD as TonicSHD

        source: TonicSource = offline(TonicSHD)(str(data_root(self.params.get("root"))), train=split == "train")
        return source

    def path(self, source: TonicSource) -> Path:
        """The HDF5 file of ``source`` (tonic's SHD names it ``data_filename``)."""
        return Path(source.location_on_system) / cast(HSDSource, source).data_filename

    def labels(self, source: TonicSource) -> np.ndarray:
        import h5py

        with h5py.File(self.path(source), "r") as handle:
            return np.asarray(handle["labels"][()], dtype=np.int64)

    def source_files(self, source: TonicSource) -> list[Path]:
        return [self.path(source)]
