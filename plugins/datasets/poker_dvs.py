"""``poker_dvs``: POKER-DVS (Serrano-Gotarredona & Linares-Barranco 2015), the four card suits
flashed before a DVS, read by ``tonic.datasets.POKERDVS`` from local files and binned into ``T``
frames ``[2, 35, 35]``.

Layout (tonic's, under the data root): ``<root>/POKERDVS/pips_train/<suit>/*.npy`` and
``<root>/POKERDVS/pips_test/<suit>/*.npy`` with suits ``cl``, ``he``, ``di``, ``sp`` (classes 0-3);
each ``.npy`` is an ``[N, 4]`` table of events ``t, x, y, p``. These are the contents of
``pips_train.tar.gz`` and ``pips_test.tar.gz`` (tonic's source repository); the dataset is tiny
(48 train, 20 test samples), so it loads in a moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from snnarena.data import data_root

from ._common import root_param
from .events import (
    FLATTEN,
    TonicEventDataset,
    TonicSource,
    first_file,
    framing_params,
    npy_events_problem,
    offline,
    stream_params,
    subset_params,
)

SPLITS = {"train": "pips_train", "test": "pips_test"}
SUITS = ("cl", "he", "di", "sp")
SOURCE = "http://www2.imse-cnm.csic.es/caviar/POKERDVS.html"
ARCHIVES = "https://github.com/neuromorphs/tonic/tree/develop/tonic/datasets"

HOW_TO_GET = (
    f"Download pips_train.tar.gz and pips_test.tar.gz from tonic's repository ({ARCHIVES}; original recordings: "
    f"{SOURCE}) and extract them into <root>/POKERDVS/, so that e.g. <root>/POKERDVS/pips_train/cl/<name>.npy "
    "and <root>/POKERDVS/pips_test/sp/<name>.npy exist."
)


class POKERDVS(TonicEventDataset):
    """POKER-DVS card suits (4 classes) from local files (tonic), binned into T frames [2, 35, 35]."""

    name = "poker_dvs"
    sensor_size = (35, 35, 2)
    n_classes = 4
    how_to_get = HOW_TO_GET
    folder_name = "POKERDVS"
    PARAMS = (
        root_param("POKERDVS/pips_train/<suit>/*.npy and POKERDVS/pips_test/<suit>/*.npy"),
        FLATTEN,
        *framing_params(),
        *subset_params(),
        *stream_params(),
    )

    @classmethod
    def missing(cls, params: Mapping[str, Any]) -> list[str]:
        folder = cls.folder(params)
        return [
            f"{folder / name}/{suit}/*.npy"
            for name in SPLITS.values()
            for suit in SUITS
            if first_file(folder / name / suit, "*.npy") is None
        ]

    @classmethod
    def damaged(cls, params: Mapping[str, Any]) -> list[str]:
        return [
            problem
            for name in SPLITS.values()
            for problem in npy_events_problem(first_file(cls.folder(params) / name, "*/*.npy"))
        ]

    def open_split(self, split: str) -> TonicSource:
        from tonic.datasets import POKERDVS as TonicPOKERDVS

        source: TonicSource = offline(TonicPOKERDVS)(str(data_root(self.params.get("root"))), train=split == "train")
        return source

    def source_files(self, source: TonicSource) -> list[Path]:
        """tonic holds POKER-DVS in memory, so the files are listed from its folder."""
        folder = Path(source.location_on_system) / source.folder_name
        return sorted(folder.glob("*/*.npy"))
