"""``mnist``: MNIST handwritten digits read from local IDX files (never downloaded).

The four original IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``) are looked for in
``<root>/MNIST/raw`` (torchvision's layout) and then in ``<root>``. Pixels are scaled to
``[0, 1]``; samples are ``[784]`` (``flatten=true``) or ``[1, 28, 28]``, batches ``[T, B, 784]``
or ``[T, B, 1, 28, 28]``, coded by ``direct`` or ``rate``. The official 60000/10000 split is kept;
``max_train``/``max_test`` take a subset drawn from the seed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from snnarena.data import ENCODINGS, DataBundle, Dataset
from snnarena.params import Param

from ._common import STREAM_TEST_SUBSET, STREAM_TRAIN_SUBSET, as_labels, as_tensor, missing_files_error, subset

FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

HOW_TO_GET = (
    "Get them on a machine with internet access, e.g. "
    "`python -c \"import torchvision; torchvision.datasets.MNIST('data', download=True)\"` "
    "(writes data/MNIST/raw/), or from the mirrors listed in torchvision.datasets.MNIST.mirrors, "
    "and copy the files (gzipped or not) into <root>/MNIST/raw/ or <root>/."
)

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or gzipped): magic ``00 00 <type> <ndim>``, ``ndim`` big-endian
    ``uint32`` sizes, then the data in row-major order."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: IDX header says shape {shape} but the file holds {len(raw) - offset} data bytes")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def find_files(root: Path) -> dict[str, Path]:
    """The four MNIST files under ``root`` (see the module docstring), or ``FileNotFoundError``."""
    for folder in (root / "MNIST" / "raw", root):
        found: dict[str, Path] = {}
        for key, stem in FILES.items():
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return found
    expected = [f"{folder}/{stem}[.gz]" for folder in (root / "MNIST" / "raw", root) for stem in FILES.values()]
    raise missing_files_error("mnist", root, expected, HOW_TO_GET)


class MNIST(Dataset):
    """MNIST 28x28 digits from local IDX files (60000/10000 split), direct or rate coded."""

    name = "mnist"
    PARAMS = (
        Param("root", "str", "data", "folder holding MNIST/raw/ (torchvision layout) or the IDX files"),
        Param("encoding", "str", "rate", "direct (pixels as current) or rate (Bernoulli spikes)", choices=ENCODINGS),
        Param("flatten", "bool", True, "samples [784] (true) or images [1, 28, 28] (false, for conv nets)"),
        Param("max_train", "int", None, "use this many training samples (drawn by the seed)", low=1, nullable=True),
        Param("max_test", "int", None, "use this many test samples (drawn by the seed)", low=1, nullable=True),
    )

    def build(self, T: int, seed: int) -> DataBundle:
        files = find_files(Path(self.params["root"]).expanduser())
        parts: dict[str, np.ndarray] = {key: read_idx(path) for key, path in files.items()}
        shape = (784,) if self.params["flatten"] else (1, 28, 28)
        tensors = []
        for split, limit, stream in (
            ("train", "max_train", STREAM_TRAIN_SUBSET),
            ("test", "max_test", STREAM_TEST_SUBSET),
        ):
            images, labels = parts[f"{split}_images"], parts[f"{split}_labels"]
            if len(images) != len(labels) or images.shape[1:] != (28, 28):
                raise ValueError(
                    f"mnist: {files[f'{split}_images']} holds images {images.shape}, "
                    f"{files[f'{split}_labels']} holds {len(labels)} labels; expected [N, 28, 28] and N labels"
                )
            idx = subset(len(labels), self.params[limit], seed, stream)
            x = images[idx].astype(np.float32).reshape(len(idx), *shape) / 255.0
            tensors += [as_tensor(x), as_labels(labels[idx].astype(np.int64))]
        return DataBundle(*tensors, T=T, n_classes=10, encoding=self.params["encoding"], seed=seed)
