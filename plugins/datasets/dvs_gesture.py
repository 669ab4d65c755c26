"""``dvs_gesture``: IBM DVS128 Gesture (Amir et al. 2017), 11 hand and arm gestures, read by
``tonic.datasets.DVSGesture`` from local files (never downloaded) and binned into ``T`` frames.

Layout (tonic's preprocessed release, under the data root):
``<root>/DVSGesture/ibmGestureTrain/user<NN>_<lighting>/<label>.npy`` and the same under
``ibmGestureTest/``; each ``.npy`` is one gesture, an ``[N, 4]`` table of events ``x, y, p, t``
(t in ms, which tonic turns into µs). These are the contents of tonic's ``ibmGestureTrain.tar.gz``
and ``ibmGestureTest.tar.gz`` (the archives themselves are not needed). The 128x128 sensor is
downsampled by ``spatial_factor`` (default 0.25: 32x32 frames ``[2, 32, 32]``, as OTTT/SLTT-style
setups shrink it); ``flatten=true`` gives ``[2 * 32 * 32]``. The official user split (23 train,
6 test subjects) is kept; ``val_fraction`` of the training part is held out for validation.
"""

from __future__ import annotations

from collections.abc import Mapping
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

SPLITS = {"train": "ibmGestureTrain", "test": "ibmGestureTest"}
SOURCE = "https://research.ibm.com/interactive/dvsgesture/"
ARCHIVES = (
    "https://figshare.com/ndownloader/files/38022171 (train), https://figshare.com/ndownloader/files/38020584 (test)"
)
SAMPLE = "user*_*/*.npy"

HOW_TO_GET = (
    f"Download tonic's preprocessed DVS128 Gesture archives ibmGestureTrain.tar.gz and ibmGestureTest.tar.gz "
    f"({ARCHIVES}; original recordings: {SOURCE}) on a machine with internet access and extract them into "
    "<root>/DVSGesture/, so that e.g. <root>/DVSGesture/ibmGestureTrain/user01_fluorescent/0.npy exists "
    "(or run tonic.datasets.DVSGesture(save_to=<root>) there and copy <root>/DVSGesture)."
)


class DVSGesture(TonicEventDataset):
    """IBM DVS128 Gesture (11 classes) from local files (tonic), binned into T frames [2, 32, 32]."""

    name = "dvs_gesture"
    sensor_size = (128, 128, 2)
    n_classes = 11
    how_to_get = HOW_TO_GET
    folder_name = "DVSGesture"
    PARAMS = (
        root_param("DVSGesture/ibmGestureTrain/ and DVSGesture/ibmGestureTest/"),
        FLATTEN,
        *framing_params(spatial_factor=0.25),
        *subset_params(),
        *stream_params(),
    )

    @classmethod
    def missing(cls, params: Mapping[str, Any]) -> list[str]:
        folder = cls.folder(params)
        return [
            f"{folder / name}/user<NN>_<lighting>/<label>.npy"
            for name in SPLITS.values()
            if first_file(folder / name, SAMPLE) is None
        ]

    @classmethod
    def damaged(cls, params: Mapping[str, Any]) -> list[str]:
        return [
            problem
            for name in SPLITS.values()
            for problem in npy_events_problem(first_file(cls.folder(params) / name, SAMPLE))
        ]

    def open_split(self, split: str) -> TonicSource:
        from tonic.datasets import DVSGesture as TonicDVSGesture

        source: TonicSource = offline(TonicDVSGesture)(str(data_root(self.params.get("root"))), train=split == "train")
        return source
