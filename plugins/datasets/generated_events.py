"""``event_shapes``: moving shapes seen by a simulated DVS, generated offline as tonic event arrays.

Each sample is one shape (``square``, ``bar``, ``cross``: the first ``n_shapes``) moving in one
of four directions (right, left, down, up) across a ``size x size`` sensor for ``duration_ms``;
its class is ``shape * 4 + direction``. The shape's position advances ``speed`` pixels per motion
step (``MOTION_STEPS`` steps, speed drawn in ``[0.15, 0.3]``) from a random start; a pixel the
shape enters emits an ON event, a pixel it leaves an OFF event, at a jittered time within the step
(the first position emits ON everywhere). ``noise`` background events per sample (Poisson count,
uniform in space, time and polarity) are mixed in. Events are a NumPy structured array in tonic's
dtype (``tonic.io.events_struct``: ``x, y`` int16, ``t`` int64 µs, ``p`` bool), binned into ``T``
frames ``[2, size, size]`` by the shared pipeline (:mod:`.events`, tonic's ``ToFrame``).

Everything is drawn from the seed (train and test from their own streams), so a seed gives the
same data on every machine; the defaults (16x16, 600 train, 200 test) train in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from snnarena.data import DataBundle, Dataset
from snnarena.params import Param

from ._common import STREAM_DATA, VAL_FRACTION, rng
from .events import BINNINGS, Framing, bin_samples, framing_of

#: Pixel offsets ``(dy, dx)`` of each shape around its position.
SHAPES: dict[str, tuple[tuple[int, int], ...]] = {
    "square": tuple((dy, dx) for dy in range(-1, 2) for dx in range(-1, 2)),
    "bar": tuple((dy, 0) for dy in range(-2, 3)),
    "cross": ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-2, 0), (2, 0), (0, -2), (0, 2)),
}
#: Unit steps ``(dy, dx)`` of the four directions: right, left, down, up.
DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))
MOTION_STEPS = 32
#: The random stream of the test samples (the training samples use ``STREAM_DATA``).
STREAM_TEST_DATA = 4
EVENTS_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])


def occupancy(shape: str, centres: np.ndarray, size: int) -> np.ndarray:
    """``[S, size, size]`` bool: the pixels ``shape`` covers at each of the ``S`` centres
    (``[S, 2]`` as ``(y, x)``, rounded); parts off the sensor are cut."""
    offsets = np.array(SHAPES[shape])
    pixels = np.rint(centres).astype(np.int64)[:, None, :] + offsets[None, :, :]  # [S, K, 2]
    step = np.broadcast_to(np.arange(len(centres))[:, None], pixels.shape[:2])
    inside = np.all((pixels >= 0) & (pixels < size), axis=-1)
    grid = np.zeros((len(centres), size, size), dtype=bool)
    grid[step[inside], pixels[inside][:, 0], pixels[inside][:, 1]] = True
    return grid


def moving_shape_events(
    shape: str, direction: int, size: int, duration_us: int, noise: float, gen: np.random.Generator
) -> np.ndarray:
    """One sample's events (structured, sorted by ``t``): the shape moving, plus background noise."""
    step_us = duration_us / MOTION_STEPS
    velocity = np.array(DIRECTIONS[direction], dtype=np.float64) * gen.uniform(0.15, 0.3)
    travel = velocity * MOTION_STEPS
    low, high = np.maximum(2.0, 2.0 - travel), np.minimum(size - 3.0, size - 3.0 - travel)
    centres = gen.uniform(low, high) + velocity * np.arange(MOTION_STEPS)[:, None]
    grid = occupancy(shape, centres, size)
    before = np.concatenate([np.zeros((1, size, size), dtype=bool), grid[:-1]])
    step, y, x = np.nonzero(grid ^ before)  # entered (ON) or left (OFF) at that step
    n_noise = int(gen.poisson(noise))
    x = np.concatenate([x, gen.integers(0, size, n_noise)])
    y = np.concatenate([y, gen.integers(0, size, n_noise)])
    t = np.concatenate([(step + gen.random(len(step))) * step_us, gen.uniform(0, duration_us, n_noise)])
    p = np.concatenate([grid[step, y[: len(step)], x[: len(step)]], gen.random(n_noise) < 0.5])
    order = np.argsort(t, kind="stable")
    return make_events(x[order], y[order], t[order].astype(np.int64), p[order])


def make_events(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """A structured event array in tonic's dtype (``tonic.io.make_structured_array``)."""
    from tonic.io import make_structured_array

    return np.asarray(make_structured_array(x, y, t, p, dtype=EVENTS_DTYPE))


def make_event_shapes(
    n: int, size: int, n_shapes: int, duration_us: int, noise: float, seed: int, stream: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` samples ``(events, labels)`` with classes drawn uniformly, from ``(seed, stream)``."""
    gen = rng(seed, stream)
    names = tuple(SHAPES)[:n_shapes]
    labels = gen.integers(0, n_shapes * len(DIRECTIONS), n)
    events = [
        moving_shape_events(names[c // len(DIRECTIONS)], int(c % len(DIRECTIONS)), size, duration_us, noise, gen)
        for c in labels.tolist()
    ]
    return events, labels.astype(np.int64)


class EventShapes(Dataset):
    """Moving shapes on a simulated DVS (tonic event arrays), offline and seeded; T frames [2, size, size]."""

    name = "event_shapes"
    PARAMS = (
        Param("size", "int", 16, "sensor side in pixels", low=8, high=256),
        Param("n_shapes", "int", 1, "shapes (square, bar, cross); classes = n_shapes * 4 directions", low=1, high=3),
        Param("n_train", "int", 600, "training samples (validation is carved from them)", low=2, high=1_000_000),
        Param("n_test", "int", 200, "test samples", low=1, high=1_000_000),
        Param("duration_ms", "float", 100.0, "length of each sample", low=1.0, high=100_000.0),
        Param("noise", "float", 10.0, "mean background events per sample", low=0.0, high=1_000_000.0),
        Param(
            "binning", "str", "time", "T bins of equal time (time) or of equal event counts (count)", choices=BINNINGS
        ),
        Param("binary", "bool", False, "1 where a pixel had an event in the bin (true) or the event count"),
        Param("flatten", "bool", False, "frames [2 * size * size] (true) or [2, size, size] (false, for conv nets)"),
        VAL_FRACTION,
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return 2 * int(params["size"]) ** 2

    def framing(self, T: int) -> Framing:
        size = int(self.params["size"])
        return framing_of({**self.params, "duration_ms": None}, (size, size, 2), T)

    def build(self, T: int, seed: int) -> DataBundle:
        p = self.params
        framing = self.framing(T)
        shape = (self.input_size(p),) if p["flatten"] else framing.frame_shape
        args = (int(p["size"]), int(p["n_shapes"]), round(float(p["duration_ms"]) * 1000), float(p["noise"]))
        tensors = []
        for n, stream in ((int(p["n_train"]), STREAM_DATA), (int(p["n_test"]), STREAM_TEST_DATA)):
            events, labels = make_event_shapes(n, *args, seed, stream)
            x, y = bin_samples(list(zip(events, labels.tolist(), strict=True)), np.arange(n), framing)
            tensors += [torch.from_numpy(x.reshape(n, T, *shape)), torch.from_numpy(y)]
        return DataBundle(
            *tensors,
            T=T,
            n_classes=int(p["n_shapes"]) * len(DIRECTIONS),
            encoding="none",
            seed=seed,
            val_fraction=float(p["val_fraction"]),
        )
