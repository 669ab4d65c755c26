"""``randman``: random-manifold spike-timing data (Zenke & Vogels 2021), reimplemented.

Generation, for each class ``k`` and each of the ``nb_spikes`` spikes of a unit, a random smooth
map ``f: [0, 1]^D → R^U`` (``D = dim_manifold``, ``U = nb_units``) with, for unit ``u``,

    f_u(z) = Π_d Σ_{i=0}^{F-1} a_{u,d,i} / (i + 1)^alpha · sin(2π (i · b_{u,d,i} · z_d + c_{u,d,i}))

where ``a, b, c ~ U(0, 1)``, ``a_{u,d,0} = 0`` (no constant term) and
``F = min(ceil(1e-3^(-1/alpha)), 1000)`` frequencies (terms above the 1e-3 amplitude cut are
dropped), as in the reference implementation. A sample of class ``k`` is a latent point
``z ~ U([0, 1]^D)``; each unit's value is min-max scaled over the class's samples to a spike time
``s ∈ [0, 1)`` and the spike goes to step ``floor(s · T)``. Larger ``alpha`` gives smoother maps.

Samples are rasters ``[T, nb_units]`` in ``{0, 1}`` (``encoding="none"``), batches
``[T, B, nb_units]``; the train/test split and the validation split carved from the training part
(``val_fraction``) are stratified by class. Parameters, latent points and splits are all drawn
from the seed, so different seeds give different manifolds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from snnarena.data import DataBundle, Dataset
from snnarena.params import Param

from ._common import STREAM_DATA, VAL_FRACTION, as_labels, rng, stratified_split

PRECISION = 1e-3
MAX_FREQUENCIES = 1000
_CHUNK_ELEMENTS = 250_000  # units * samples * frequencies evaluated at once (cache-sized)


def n_frequencies(alpha: float) -> int:
    """Fourier terms kept: those whose amplitude bound ``1/(i+1)^alpha`` is at least 1e-3."""
    return int(min(math.ceil(PRECISION ** (-1.0 / alpha)), MAX_FREQUENCIES))


def eval_manifold(theta: np.ndarray, z: np.ndarray, alpha: float) -> np.ndarray:
    """Evaluate one random manifold at latent points.

    ``theta`` ``[U, D, 3, F]`` (amplitude, frequency, phase factors in ``[0, 1)``), ``z`` ``[N, D]``
    → ``[N, U]`` (float64), evaluated in cache-sized chunks of latent points.
    """
    n_units, dim, _, n_freq = theta.shape
    k = torch.arange(n_freq, dtype=torch.float64)
    th = torch.from_numpy(np.ascontiguousarray(theta, dtype=np.float64))
    amp = th[:, :, 0] / (k + 1.0) ** alpha  # [U, D, F]
    freq = th[:, :, 1] * k * (2.0 * math.pi)  # [U, D, F], radians per unit of z
    phase = th[:, :, 2] * (2.0 * math.pi)  # [U, D, F]
    zt = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float64))
    out = torch.ones(n_units, len(z), dtype=torch.float64)
    step = max(1, _CHUNK_ELEMENTS // (n_units * n_freq))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small cache-sized ops: threads gain little, and stall when cores are busy
    try:
        for start in range(0, len(z), step):
            zc = zt[start : start + step]
            for d in range(dim):
                arg = torch.addcmul(phase[:, d, None, :], freq[:, d, None, :], zc[None, :, d, None])  # [U, n, F]
                out[:, start : start + step] *= torch.linalg.vecdot(arg.sin_(), amp[:, d, None, :])
    finally:
        torch.set_num_threads(threads)
    return out.T.numpy()


def spike_times(values: np.ndarray) -> np.ndarray:
    """Min-max scale ``[N, U]`` over the samples (per unit) into ``[0, 1)``."""
    lo = values.min(axis=0, keepdims=True)
    span = values.max(axis=0, keepdims=True) - lo
    scaled = (values - lo) / np.where(span > 0, span, 1.0)
    clipped: np.ndarray = np.clip(scaled, 0.0, np.nextafter(1.0, 0.0))
    return clipped


def make_randman(
    nb_classes: int,
    nb_units: int,
    nb_samples: int,
    dim_manifold: int,
    alpha: float,
    nb_spikes: int,
    T: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasters ``[nb_classes * nb_samples, T, nb_units]`` (float32, ``{0, 1}``) and labels, ordered by
    class."""
    gen = rng(seed, STREAM_DATA)
    n_freq = n_frequencies(alpha)
    x = np.zeros((nb_classes, nb_samples, T, nb_units), dtype=np.float32)
    units = np.arange(nb_units)[None, :]
    samples = np.arange(nb_samples)[:, None]
    for c in range(nb_classes):
        thetas = gen.random((nb_spikes, nb_units, dim_manifold, 3, n_freq))
        thetas[:, :, :, 0, 0] = 0.0
        z = gen.random((nb_samples, dim_manifold))
        for s in range(nb_spikes):
            times = spike_times(eval_manifold(thetas[s], z, alpha))
            steps = np.minimum(np.floor(times * T).astype(np.int64), T - 1)
            x[c, samples, steps, units] = 1.0
    y = np.repeat(np.arange(nb_classes, dtype=np.int64), nb_samples)
    return x.reshape(nb_classes * nb_samples, T, nb_units), y


class Randman(Dataset):
    """Random-manifold spike-timing classes (Zenke & Vogels 2021); temporal rasters [T, nb_units]."""

    name = "randman"
    PARAMS = (
        Param("nb_classes", "int", 10, "classes (one random manifold each)", low=2, high=1000),
        Param("nb_units", "int", 50, "input units (one spike time each per manifold)", low=1, high=100_000),
        Param("nb_samples", "int", 100, "samples per class", low=2, high=1_000_000),
        Param("dim_manifold", "int", 3, "latent dimension D of each manifold", low=1, high=64),
        Param("alpha", "float", 1.0, "smoothness: decay exponent of the Fourier amplitudes", low=0.1, high=100.0),
        Param("nb_spikes", "int", 1, "spikes per unit (one independent manifold each)", low=1, high=100),
        Param("test_fraction", "float", 0.25, "share of each class held out for testing", low=0.01, high=0.99),
        VAL_FRACTION,
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return int(params["nb_units"])

    def build(self, T: int, seed: int) -> DataBundle:
        p = self.params
        x, y = make_randman(
            int(p["nb_classes"]),
            int(p["nb_units"]),
            int(p["nb_samples"]),
            int(p["dim_manifold"]),
            float(p["alpha"]),
            int(p["nb_spikes"]),
            T,
            seed,
        )
        train, test = stratified_split(y, float(p["test_fraction"]), seed)
        return DataBundle(
            torch.from_numpy(x[train]),
            as_labels(y[train]),
            torch.from_numpy(x[test]),
            as_labels(y[test]),
            T=T,
            n_classes=int(p["nb_classes"]),
            encoding="none",
            seed=seed,
            val_fraction=float(p["val_fraction"]),
        )
