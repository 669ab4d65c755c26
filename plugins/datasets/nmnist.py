"""``nmnist``: N-MNIST (Orchard et al. 2015) event streams read from local ``.bin`` files.

Layout: ``<root>/Train/<digit>/*.bin`` and ``<root>/Test/<digit>/*.bin`` (``root``, then
``root/NMNIST`` and ``root/N-MNIST`` are tried), as unzipped from the original ``Train.zip`` /
``Test.zip``. Each file is a sequence of 40-bit events, 5 bytes each:

    byte 0: x (0..33)   byte 1: y (0..33)
    byte 2: bit 7 polarity (1 = ON), bits 6..0 timestamp bits 22..16
    bytes 3, 4: timestamp bits 15..0 (microseconds)

The events of a sample are binned into ``T`` frames ``[2, 34, 34]`` (channel 0 = OFF, 1 = ON;
``[polarity, y, x]``): by default the span from the sample's first to last event is cut into ``T``
equal bins; with ``duration_ms`` the window ``[0, duration_ms)`` is, and later events are dropped.
A frame holds 1 where a pixel had an event of that polarity (``binary=true``) or the event count.
Samples are ``[T, 2312]`` (``flatten=true``) or ``[T, 2, 34, 34]``; batches ``[T, B, 2312]`` or
``[T, B, 2, 34, 34]`` (``encoding="none"``). All of it is held in memory as float32
(``N * T * 2312 * 4`` bytes): use ``max_train``/``max_test`` for a subset drawn from the seed.
``val_fraction`` of the (subset of the) training split is held out for validation, stratified
by class.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnarena.data import DataBundle, Dataset
from snnarena.params import Param

from ._common import (
    STREAM_TEST_SUBSET,
    STREAM_TRAIN_SUBSET,
    VAL_FRACTION,
    MissingDataFiles,
    as_labels,
    damaged_file_error,
    missing_files_error,
    subset,
)

SENSOR = 34
EVENT_BYTES = 5

HOW_TO_GET = (
    "Download Train.zip and Test.zip of N-MNIST (https://www.garrickorchard.com/datasets/n-mnist, "
    "the files tonic.datasets.NMNIST also fetches) on a machine with internet access and unzip "
    "them into <root>, so that e.g. <root>/Train/0/00002.bin and <root>/Test/0/00004.bin exist."
)


def read_events(path: Path) -> dict[str, np.ndarray]:
    """Events of one N-MNIST ``.bin`` file as ``int64`` arrays ``x``, ``y``, ``p`` (0/1), ``t`` (µs)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % EVENT_BYTES:
        raise damaged_file_error(path, f"{raw.size} bytes is not a whole number of 5-byte N-MNIST events")
    ev = raw.reshape(-1, EVENT_BYTES).astype(np.int64)
    return {
        "x": ev[:, 0],
        "y": ev[:, 1],
        "p": ev[:, 2] >> 7,
        "t": ((ev[:, 2] & 0x7F) << 16) | (ev[:, 3] << 8) | ev[:, 4],
    }


def events_to_frames(
    events: dict[str, np.ndarray], T: int, duration_us: float | None = None, binary: bool = True
) -> np.ndarray:
    """Bin events into ``[T, 2, 34, 34]`` float32 frames (see the module docstring); events
    outside the 34x34 sensor are dropped."""
    x, y, p, t = events["x"], events["y"], events["p"], events["t"]
    keep = (x < SENSOR) & (y < SENSOR)
    if duration_us is not None:
        keep &= t < duration_us
    x, y, p, t = x[keep], y[keep], p[keep], t[keep]
    frames = np.zeros((T, 2, SENSOR, SENSOR), dtype=np.float32)
    if len(t) == 0:
        return frames
    if duration_us is None:
        t0 = int(t.min())
        span = int(t.max()) - t0 + 1
        bins = (t - t0) * T // span
    else:
        bins = np.minimum(np.floor(t * (T / duration_us)).astype(np.int64), T - 1)
    flat = ((bins * 2 + p) * SENSOR + y) * SENSOR + x
    counts = np.bincount(flat, minlength=frames.size).reshape(frames.shape)
    frames[:] = counts > 0 if binary else counts
    return frames


def list_samples(folder: Path) -> list[tuple[Path, int]]:
    """``(file, digit)`` for every ``folder/<digit>/*.bin``, sorted by digit then file name."""
    return [(path, digit) for digit in range(10) for path in sorted((folder / str(digit)).glob("*.bin"))]


def first_sample(split: Path) -> Path | None:
    """One ``split/<digit>/*.bin`` file, found without listing the whole split; ``None`` if none."""
    for digit in range(10):
        found = next((split / str(digit)).glob("*.bin"), None)
        if found is not None:
            return found
    return None


def find_root(root: Path) -> Path:
    """The folder holding both ``Train/`` and ``Test/`` with ``.bin`` files, or
    :class:`MissingDataFiles` naming the split missing from the folder that has the other."""
    candidates = (root, root / "NMNIST", root / "N-MNIST")
    splits = ("Train", "Test")
    has = [[first_sample(folder / split) is not None for split in splits] for folder in candidates]
    for folder, present in zip(candidates, has, strict=True):
        if all(present):
            return folder
    best = max(range(len(candidates)), key=lambda i: sum(has[i]))
    if any(has[best]):
        absent = [split for split, ok in zip(splits, has[best], strict=True) if not ok]
        missing = [f"{candidates[best]}/{split}/<digit 0-9>/*.bin" for split in absent]
    else:
        missing = [f"{folder}/{split}/<digit 0-9>/*.bin" for folder in candidates for split in splits]
    raise missing_files_error("nmnist", root, missing, HOW_TO_GET)


class NMNIST(Dataset):
    """N-MNIST neuromorphic digits from local event files, binned into T frames [2, 34, 34]."""

    name = "nmnist"
    PARAMS = (
        Param("root", "str", "data", "folder holding Train/ and Test/ (or NMNIST/Train, NMNIST/Test)"),
        Param("flatten", "bool", True, "frames [2312] (true) or [2, 34, 34] (false, for conv nets)"),
        Param("binary", "bool", True, "1 where a pixel had an event in the bin (true) or the event count"),
        Param(
            "duration_ms",
            "float",
            None,
            "bin the window [0, duration_ms) (null: each sample's first-to-last event span)",
            low=1e-3,
            nullable=True,
        ),
        Param("max_train", "int", None, "use this many training samples (drawn by the seed)", low=1, nullable=True),
        Param("max_test", "int", None, "use this many test samples (drawn by the seed)", low=1, nullable=True),
        VAL_FRACTION,
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return 2 * SENSOR * SENSOR

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> list[str]:
        """Train/ and Test/ hold ``.bin`` files, and the first of each is whole 5-byte events."""
        try:
            folder = find_root(Path(params["root"]).expanduser())
        except MissingDataFiles as err:
            return [str(err)]
        problems = []
        for split in ("Train", "Test"):
            sample = first_sample(folder / split)
            if sample is not None and sample.stat().st_size % EVENT_BYTES:
                problems.append(str(damaged_file_error(sample, "not a whole number of 5-byte N-MNIST events")))
        return problems

    def build(self, T: int, seed: int) -> DataBundle:
        folder = find_root(Path(self.params["root"]).expanduser())
        duration = self.params["duration_ms"]
        duration_us = None if duration is None else float(duration) * 1000.0
        shape = (2 * SENSOR * SENSOR,) if self.params["flatten"] else (2, SENSOR, SENSOR)
        tensors = []
        for split, limit, stream in (
            ("Train", "max_train", STREAM_TRAIN_SUBSET),
            ("Test", "max_test", STREAM_TEST_SUBSET),
        ):
            samples = list_samples(folder / split)
            chosen = [samples[i] for i in subset(len(samples), self.params[limit], seed, stream)]
            x = np.empty((len(chosen), T, *shape), dtype=np.float32)
            for i, (path, _) in enumerate(chosen):
                x[i] = events_to_frames(read_events(path), T, duration_us, self.params["binary"]).reshape(T, *shape)
            labels = np.array([digit for _, digit in chosen], dtype=np.int64)
            tensors += [torch.from_numpy(x), as_labels(labels)]
        return DataBundle(
            *tensors, T=T, n_classes=10, encoding="none", seed=seed, val_fraction=float(self.params["val_fraction"])
        )
