"""``mnist``: MNIST handwritten digits read from local IDX files (never downloaded).

The four original IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``) are looked for in
``<root>/MNIST/raw`` (torchvision's layout) and then in ``<root>``. Pixels are scaled to
``[0, 1]``; samples are ``[784]`` (``flatten=true``) or ``[1, 28, 28]``, batches ``[T, B, 784]``
or ``[T, B, 1, 28, 28]``, coded by ``direct`` or ``rate``. The official 60000/10000 split is kept;
``max_train``/``max_test`` take a subset drawn from the seed, and ``val_fraction`` of the
(subset of the) training split is held out for validation, stratified by class.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from snnarena.data import ENCODINGS, DataBundle, Dataset
from snnarena.params import Param

from ._common import (
    STREAM_TEST_SUBSET,
    STREAM_TRAIN_SUBSET,
    VAL_FRACTION,
    DamagedDataFile,
    MissingDataFiles,
    as_labels,
    as_tensor,
    damaged_file_error,
    missing_files_error,
    subset,
)

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


def _parse_header(path: Path, head: bytes) -> tuple[np.dtype, tuple[int, ...]]:
    """Dtype and shape from the first bytes of an IDX file: magic ``00 00 <type> <ndim>``, then
    ``ndim`` big-endian ``uint32`` sizes."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise damaged_file_error(path, f"not an IDX file (bad magic number {head[:4].hex()})")
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        raise damaged_file_error(path, "IDX header cut short")
    shape = tuple(int(v) for v in np.frombuffer(head, dtype=">u4", count=ndim, offset=4))
    return _IDX_DTYPES[head[2]], shape


def _read(path: Path, size: int = -1) -> bytes:
    """The first ``size`` bytes (all with ``-1``) of a plain or gzipped file; a damaged gzip
    stream is a :class:`DamagedDataFile` naming the path."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as packed:
                return packed.read(size)
        with open(path, "rb") as plain:
            return plain.read(size)
    except (OSError, EOFError, zlib.error) as err:
        raise damaged_file_error(path, f"cannot be read ({type(err).__name__}: {err})") from None


def read_idx_header(path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Dtype and shape of an IDX file, reading only its header."""
    magic = _read(path, 4)
    return _parse_header(path, _read(path, 4 + 4 * magic[3]) if len(magic) == 4 else magic)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or gzipped): the header, then the data in row-major order."""
    raw = _read(path)
    dtype, shape = _parse_header(path, raw)
    offset = 4 + 4 * len(shape)
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - offset != count * dtype.itemsize:
        raise damaged_file_error(
            path, f"IDX header says shape {shape} but the file holds {len(raw) - offset} data bytes"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _size_matches(path: Path, content_bytes: int) -> bool:
    """Whether the file holds ``content_bytes`` bytes: its size, or for ``.gz`` the size its
    gzip trailer records (modulo 2**32)."""
    if path.suffix != ".gz":
        return path.stat().st_size == content_bytes
    with open(path, "rb") as handle:
        if handle.seek(0, 2) < 4:
            return False
        handle.seek(-4, 2)
        return int.from_bytes(handle.read(4), "little") == content_bytes % 2**32


def _file_problems(key: str, path: Path) -> tuple[list[str], tuple[int, ...] | None]:
    """Problems of one MNIST file judged from its header and size, and its shape when readable."""
    try:
        dtype, shape = read_idx_header(path)
        if not _size_matches(path, 4 + 4 * len(shape) + int(np.prod(shape)) * dtype.itemsize):
            raise damaged_file_error(path, f"truncated or damaged: its IDX header promises shape {list(shape)}")
    except DamagedDataFile as err:
        return [str(err)], None
    images = key.endswith("images")
    if (images and shape[1:] != (28, 28)) or (not images and len(shape) != 1):
        wanted = "[N, 28, 28]" if images else "[N]"
        return [f"{path}: holds shape {list(shape)}, expected {wanted}; is it the right file?"], None
    return [], shape


def header_problems(files: Mapping[str, Path]) -> list[str]:
    """What is wrong with the four files judged from their headers and sizes (empty: fine)."""
    problems: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    for key, path in files.items():
        found, shape = _file_problems(key, path)
        problems += found
        if shape is not None:
            shapes[key] = shape
    for split in ("train", "test"):
        images, labels = shapes.get(f"{split}_images"), shapes.get(f"{split}_labels")
        if images and labels and images[0] != labels[0]:
            problems.append(
                f"{files[f'{split}_images']} holds {images[0]} images but {files[f'{split}_labels']} "
                f"{labels[0]} labels; the two files must come from the same release"
            )
    return problems


def _present(folder: Path) -> dict[str, Path]:
    """The MNIST files found in ``folder`` (plain preferred over ``.gz``)."""
    found: dict[str, Path] = {}
    for key, stem in FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    return found


def find_files(root: Path) -> dict[str, Path]:
    """The four MNIST files under ``root`` (see the module docstring), or :class:`MissingDataFiles`
    naming the files missing from the folder that holds the most of them."""
    folders = (root / "MNIST" / "raw", root)
    present = [_present(folder) for folder in folders]
    for found in present:
        if len(found) == len(FILES):
            return found
    best = max(range(len(folders)), key=lambda i: len(present[i]))
    if not present[best]:
        expected = [f"{folder}/{stem}[.gz]" for folder in folders for stem in FILES.values()]
        raise missing_files_error("mnist", root, expected, HOW_TO_GET)
    missing = [f"{folders[best]}/{stem}[.gz]" for key, stem in FILES.items() if key not in present[best]]
    raise missing_files_error("mnist", root, missing, HOW_TO_GET)


class MNIST(Dataset):
    """MNIST 28x28 digits from local IDX files (60000/10000 split), direct or rate coded."""

    name = "mnist"
    PARAMS = (
        Param("root", "str", "data", "folder holding MNIST/raw/ (torchvision layout) or the IDX files"),
        Param(
            "encoding",
            "str",
            "rate",
            "direct (pixels as current), rate (Bernoulli spikes) or static (the constant input of a relaxing network)",
            choices=ENCODINGS,
        ),
        Param("flatten", "bool", True, "samples [784] (true) or images [1, 28, 28] (false, for conv nets)"),
        Param("max_train", "int", None, "use this many training samples (drawn by the seed)", low=1, nullable=True),
        Param("max_test", "int", None, "use this many test samples (drawn by the seed)", low=1, nullable=True),
        VAL_FRACTION,
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return 28 * 28

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> list[str]:
        """The four IDX files exist, their headers are MNIST's and their sizes match them."""
        try:
            files = find_files(Path(params["root"]).expanduser())
        except MissingDataFiles as err:
            return [str(err)]
        return header_problems(files)

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
        return DataBundle(
            *tensors,
            T=T,
            n_classes=10,
            encoding=self.params["encoding"],
            seed=seed,
            val_fraction=float(self.params["val_fraction"]),
        )
