"""``cifar10_dvs``: CIFAR10-DVS (Li et al. 2017), CIFAR-10 images moved before a DVS (10 classes,
10 000 recordings), read by ``tonic.datasets.CIFAR10DVS`` from local ``.aedat4`` files and binned
into ``T`` frames.

Layout (tonic's, under the data root): ``<root>/CIFAR10DVS/<class>/*.aedat4`` for the classes
``airplane automobile bird cat deer dog frog horse ship truck``, the contents of the per-class zips
inside tonic's ``CIFAR10DVS.zip``. Reading ``.aedat4`` needs the ``aedat`` package. The release
has no test split: a seeded stratified ``test_fraction`` (default 0.1, the usual 9:1) of each
class is held out, then ``val_fraction`` of the training part. The 128x128 sensor is downsampled by
``spatial_factor`` (default 0.375: 48x48 frames ``[2, 48, 48]``, as SLTT trains it; 0.5 gives 64x64).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from snnarena.data import Bundle, data_root
from snnarena.extras import ExtraMissing, import_extra
from snnarena.params import Param

from ._common import STREAM_TEST_SUBSET, STREAM_TRAIN_SUBSET, root_param, stratified_split, subset
from .events import (
    FLATTEN,
    TonicEventDataset,
    TonicSource,
    first_file,
    framing_params,
    offline,
    stream_params,
    subset_params,
)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SOURCE = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"
ARCHIVE = "https://figshare.com/ndownloader/files/38023437"

HOW_TO_GET = (
    f"Download tonic's CIFAR10DVS.zip ({ARCHIVE}; original release: {SOURCE}) on a machine with internet access, "
    "unzip it into <root>/CIFAR10DVS/ and unzip each class zip there, so that e.g. "
    "<root>/CIFAR10DVS/airplane/<name>.aedat4 exists (or run tonic.datasets.CIFAR10DVS(save_to=<root>) there "
    "and copy <root>/CIFAR10DVS)."
)


def load_aedat() -> Any:
    """The ``aedat`` module tonic reads ``.aedat4`` files with (an optional dependency)."""
    return import_extra("aedat", extra="events", needed_for="reading CIFAR10-DVS .aedat4 files (cifar10_dvs)")


class CIFAR10DVS(TonicEventDataset):
    """CIFAR10-DVS (10 classes) from local .aedat4 files (tonic), seeded 9:1 split, T frames [2, 48, 48]."""

    name = "cifar10_dvs"
    sensor_size = (128, 128, 2)
    n_classes = 10
    how_to_get = HOW_TO_GET
    folder_name = "CIFAR10DVS"
    PARAMS = (
        root_param("CIFAR10DVS/<class>/*.aedat4"),
        FLATTEN,
        Param("test_fraction", "float", 0.1, "share of each class held out for testing", low=0.01, high=0.99),
        *framing_params(spatial_factor=0.375),
        *subset_params(),
        *stream_params(),
    )

    @classmethod
    def missing(cls, params: Mapping[str, Any]) -> list[str]:
        folder = cls.folder(params)
        return [f"{folder / name}/*.aedat4" for name in CLASSES if first_file(folder / name, "*.aedat4") is None]

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> list[str]:
        problems = super().check_files(params)
        try:
            load_aedat()
        except ExtraMissing as err:
            problems.append(str(err))
        return problems

    def open_split(self, split: str) -> TonicSource:
        from tonic.datasets import CIFAR10DVS as TonicCIFAR10DVS

        source: TonicSource = offline(TonicCIFAR10DVS)(str(data_root(self.params.get("root"))))
        return source

    def build(self, T: int, seed: int) -> Bundle:
        """Bin the samples the seeded split and subsets keep (all of them, whatever the seed,
        without ``max_train``/``max_test``, so the cache serves every seed) and split them."""
        self.require_files()
        load_aedat()
        source = self.open_split("all")
        labels = self.labels(source)
        train, test = stratified_split(labels, float(self.params["test_fraction"]), seed)
        train = np.sort(train[subset(len(train), self.params["max_train"], seed, STREAM_TRAIN_SUBSET)])
        test = np.sort(test[subset(len(test), self.params["max_test"], seed, STREAM_TEST_SUBSET)])
        needed = np.union1d(train, test)
        binned = self.binned(source, "all", needed, T)
        at_train, at_test = np.searchsorted(needed, train), np.searchsorted(needed, test)
        return self.bundle(binned.select(at_train), binned.select(at_test), T, seed)
