"""``mnist1d``: the MNIST-1D benchmark (Greydanus 2020), generated locally by the ``mnist1d`` package.

Ten 1D templates (one per digit) are padded, scaled, translated, sheared and corrupted by
correlated and i.i.d. noise, then subsampled to 40 values. These are the samples of
``mnist1d.data.make_dataset`` with ``args.seed = seed``, generated locally (nothing is downloaded)
by a vectorised copy of the package's generator (see :func:`generate`). The generator shuffles the
``num_samples`` samples (``num_samples // 10`` per class); the last ``round(N * test_fraction)``
are the test split (``seed=42, num_samples=5000, test_fraction=0.2`` is the published 4000/1000
setup). ``val_fraction`` of the remaining training samples is held out for validation (seeded,
stratified by class: :func:`snnarena.data.validation_split`).

Encodings, with statistics from the training split only (validation and test are scaled by them):

* ``direct``: the 40-vector standardised (scalar mean/std) is the input current at every step;
  samples ``[40]``, batches ``[T, B, 40]``;
* ``rate``: the 40-vector min-max normalised to ``[0, 1]`` (other splits clamped) gives Bernoulli
  spike probabilities; samples ``[40]``, batches ``[T, B, 40]`` in ``{0, 1}``;
* ``sequence``: the standardised signal is resampled to ``T`` points by linear interpolation and
  fed one value per step; samples ``[T, 1]``, batches ``[T, B, 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from snnarena.data import DataBundle, Dataset, validation_split
from snnarena.params import Param

from ._common import VAL_FRACTION, as_labels, as_tensor


@lru_cache(maxsize=4)
def generate(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Signals ``[N, 40]`` (float32) and labels ``[N]`` (int64), ``N = 10 * (num_samples // 10)``,
    in the generator's shuffled order; read-only (cached).

    The same samples as ``mnist1d.data.make_dataset`` with ``args.num_samples = num_samples``,
    ``args.seed = seed % 2**32`` and the package's other default arguments (equal to ~1e-14; a
    test checks it), drawn from a private ``RandomState`` in the package's order of draws and
    transformed in a vectorised way: about 15x faster than the package's per-sample loop of
    ``scipy`` interpolations, and the global ``numpy.random`` state is left alone.
    """
    from mnist1d.data import get_dataset_args, get_templates

    args = get_dataset_args()
    templates = get_templates()
    rs = np.random.RandomState(seed % 2**32)
    n_classes = len(templates["y"])
    per_class = num_samples // n_classes
    n = per_class * n_classes
    pad_low, pad_high = args.padding
    t_len = args.template_len
    length = t_len + pad_high  # the dilated length, before the final subsampling

    # the package's draws, per sample and in its order: pad, scale, translate, noises, shear
    uniforms = np.empty((n, 3))
    shifts = np.empty(n, dtype=np.int64)
    corr = np.empty((n, length))
    iid = np.empty((n, length))
    for i in range(n):
        uniforms[i, 0] = rs.rand()
        uniforms[i, 1] = rs.rand()
        shifts[i] = rs.choice(args.max_translation)
        corr[i] = rs.randn(length)
        iid[i] = rs.randn(length)
        uniforms[i, 2] = rs.rand()
    labels = np.repeat(np.asarray(templates["y"], dtype=np.int64), per_class)

    # pad with zeros (random amount), dilate to `length` points
    padded_len = t_len + pad_low + (uniforms[:, 0] * (pad_high - pad_low + 1)).astype(np.int64)
    padded = np.zeros((n, t_len + pad_high + 1))
    padded[:, :t_len] = templates["x"][labels] + 1e-8
    pos = np.linspace(0.0, 1.0, length)[None, :] * (padded_len[:, None] - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), padded_len[:, None] - 2)
    w = pos - lo
    x = np.take_along_axis(padded, lo, 1) * (1 - w) + np.take_along_axis(padded, lo + 1, 1) * w
    # scale, translate (circular shift), correlated noise where the signal is zero, i.i.d. noise
    x *= 1 + args.scale_coeff * (uniforms[:, 1:2] - 0.5)
    x = np.take_along_axis(x, (np.arange(length)[None, :] - shifts[:, None]) % length, 1)
    mask = x != 0
    x = mask * x + (1 - mask) * gaussian_filter1d(args.corr_noise_scale * corr, 2, axis=-1)
    x = x + args.iid_noise_scale * iid
    # shear, subsample to the final length
    x = x - (args.shear_scale * (uniforms[:, 2:3] - 0.5)) * np.linspace(-0.5, 0.5, length)[None, :]
    x = resample(x, args.final_seq_length)

    order = rs.permutation(n)
    x, labels = x[order], labels[order]
    x = ((x - x.mean()) / x.std()).astype(np.float32)
    x.setflags(write=False)
    labels.setflags(write=False)
    return x, labels


def resample(x: np.ndarray, steps: int) -> np.ndarray:
    """Linear interpolation of ``[N, L]`` signals onto ``steps`` evenly spaced points → ``[N, steps]``
    (the first and last points are kept)."""
    length = x.shape[1]
    pos = np.linspace(0.0, length - 1.0, steps)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, length - 1)
    w = (pos - lo).astype(x.dtype)
    out: np.ndarray = x[:, lo] * (1 - w) + x[:, hi] * w
    return out


class MNIST1D(Dataset):
    """MNIST-1D (10 classes, 40-sample 1D signals) generated locally; static or sequential input."""

    name = "mnist1d"
    PARAMS = (
        Param("num_samples", "int", 5000, "samples in all (num_samples // 10 per class)", low=20, high=1_000_000),
        Param("test_fraction", "float", 0.2, "share of the samples held out for testing", low=0.01, high=0.99),
        Param(
            "encoding",
            "str",
            "direct",
            "direct (standardised vector each step), rate (Bernoulli spikes), "
            "sequence (the signal resampled to T steps, one value per step), "
            "static (the standardised vector as the constant input of a relaxing network)",
            choices=("direct", "rate", "sequence", "static"),
        ),
        VAL_FRACTION,
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return 1 if params["encoding"] == "sequence" else 40

    def build(self, T: int, seed: int) -> DataBundle:
        x, y = generate(int(self.params["num_samples"]), seed)
        n_test = min(max(round(len(y) * float(self.params["test_fraction"])), 1), len(y) - 1)
        split = len(y) - n_test
        train, val = (
            i.numpy() for i in validation_split(as_labels(y[:split]), float(self.params["val_fraction"]), seed)
        )
        parts = {"train": x[train], "val": x[val], "test": x[split:]}
        encoding = self.params["encoding"]
        if encoding == "rate":
            lo, hi = float(parts["train"].min()), float(parts["train"].max())
            parts = {k: np.clip((v - lo) / (hi - lo), 0.0, 1.0) for k, v in parts.items()}
        else:
            mean, std = float(parts["train"].mean()), float(parts["train"].std())
            parts = {k: (v - mean) / std for k, v in parts.items()}
        if encoding == "sequence":
            parts = {k: resample(v, T)[..., None] for k, v in parts.items()}
        return DataBundle(
            as_tensor(parts["train"]),
            as_labels(y[train]),
            as_tensor(parts["test"]),
            as_labels(y[split:]),
            T=T,
            n_classes=10,
            encoding="none" if encoding == "sequence" else encoding,
            seed=seed,
            val=(as_tensor(parts["val"]), as_labels(y[val])),
        )
