"""Event streams to frames, shared by the event datasets: tonic's transforms, a disk cache and a
base class for datasets read through tonic's own dataset classes (never downloading).

An event stream is a NumPy structured array as tonic gives it: fields ``x``, ``y`` (DVS cameras;
absent for audio such as SHD), ``t`` (µs) and ``p`` (polarity), in whatever order and dtypes the
source uses; every field is read by name. :func:`bin_events` turns one stream into ``T`` frames:

1. optionally keep the first ``duration_ms`` of the stream (``tonic.transforms.CropTime``);
2. optionally shrink the sensor by ``spatial_factor`` (``tonic.transforms.Downsample``:
   ``x' = floor(f x)``, so a side of ``W`` pixels becomes ``floor(f (W - 1)) + 1``, e.g.
   128 → 32 for ``f = 0.25``, 128 → 48 for ``f = 0.375``);
3. ``tonic.transforms.ToFrame`` with ``n_time_bins=T`` (``binning="time"``: ``T`` equal windows
   of the span from the first to the last event) or ``n_event_bins=T`` (``binning="count"``:
   ``T`` bins of ``n // T`` events each); a frame counts the events per polarity and pixel;
4. ``binary``: 1 where a pixel had an event in the bin.

Frames are ``[T, P, H, W]`` for DVS streams and ``[T, P * X]`` for audio streams. They are
stored compactly (``uint8`` when every count fits, else ``int16``); the bundles turn them into
float batches.

A split is binned one sample at a time into a memory-mapped ``frames.npy`` (``[N, T, *frame]``)
beside ``labels.npy`` (:func:`write_split`), so binning never holds more than one sample's frames.
Binning a real dataset takes minutes, so :func:`cached_split` keeps that folder under
``<data root>/snnarena-cache/``, keyed by a hash of the dataset, split, framing, chosen samples
and the sizes and modification times of the source files: a second build with the same key reads
the cache, and any change (a new ``T``, a replaced file) bins again (``cache = false``: a
temporary folder, removed after use). The in-memory bundle reads the chosen rows into memory;
``stream = true`` reads them sample by sample through data loaders (:class:`FrameFile`,
:class:`~snnarena.streaming.StreamingBundle`), which gives the same batches.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset as TorchDataset

from snnarena.data import Bundle, DataBundle, Dataset, data_root
from snnarena.params import Param
from snnarena.streaming import Samples, StreamingBundle

from ._common import (
    MAX_TEST,
    MAX_TRAIN,
    STREAM_TEST_SUBSET,
    STREAM_TRAIN_SUBSET,
    VAL_FRACTION,
    WORKERS,
    DamagedDataFile,
    MissingDataFiles,
    as_labels,
    damaged_file_error,
    missing_files_error,
    stream_param,
    subset,
)

#: ``binning`` values: ToFrame's ``n_time_bins`` or ``n_event_bins``.
BINNINGS: tuple[str, ...] = ("time", "count")
#: The folder under the data root that holds binned splits.
CACHE_FOLDER = "snnarena-cache"
#: Bumped whenever the binning code changes what it writes, so older caches are not read
#: (2: a folder of memory-mappable ``frames.npy`` and ``labels.npy`` instead of one ``.npz``).
CACHE_VERSION = 2


@dataclass(frozen=True)
class Framing:
    """How a stream becomes ``T`` frames (see the module docstring).

    ``sensor_size`` is tonic's ``(W, H, P)`` of the source (``H = 1`` for audio, whose events have
    no ``y``); ``duration_us`` keeps the events within that long after the first one.
    """

    sensor_size: tuple[int, int, int]
    T: int
    binning: str = "time"
    spatial_factor: float = 1.0
    binary: bool = False
    duration_us: float | None = None

    def __post_init__(self) -> None:
        if self.binning not in BINNINGS:
            raise ValueError(f"binning must be one of {', '.join(BINNINGS)}, got {self.binning!r}")
        if self.T < 1:
            raise ValueError(f"T must be >= 1, got {self.T}")
        if not 0.0 < self.spatial_factor <= 1.0:
            raise ValueError(f"spatial_factor must be in (0, 1], got {self.spatial_factor}")

    @property
    def audio(self) -> bool:
        """Whether the stream has no ``y`` (a one-row sensor such as SHD's 700 channels)."""
        return self.sensor_size[1] == 1

    @property
    def frame_sensor(self) -> tuple[int, int, int]:
        """tonic's ``(W, H, P)`` after downsampling."""
        width, height, polarities = self.sensor_size
        return (scaled_side(width, self.spatial_factor), scaled_side(height, self.spatial_factor), polarities)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """One frame: ``(P, H, W)``, or ``(P * W,)`` for audio."""
        width, height, polarities = self.frame_sensor
        return (polarities * width,) if self.audio else (polarities, height, width)


def scaled_side(side: int, factor: float) -> int:
    """Pixels of a side of ``side`` pixels after ``Downsample(spatial_factor=factor)``: coordinate
    ``side - 1`` becomes ``floor(factor (side - 1))``."""
    return int(np.floor(np.float64(side - 1) * factor)) + 1


def bin_events(events: np.ndarray, framing: Framing) -> np.ndarray:
    """One event stream → ``int16`` frames ``[T, *framing.frame_shape]`` (or ``uint8`` 0/1 when
    ``framing.binary``); events outside the sensor are dropped, the input is left unchanged."""
    from tonic.transforms import CropTime, Downsample, ToFrame

    events = _time_ordered(events)
    if framing.duration_us is not None and len(events):
        start = events["t"][0]
        events = CropTime(min=start, max=start + framing.duration_us)(events)
    if framing.spatial_factor != 1.0:
        events = Downsample(spatial_factor=framing.spatial_factor)(events)
    events = _on_sensor(events, framing)
    counts = {"n_time_bins": framing.T} if framing.binning == "time" else {"n_event_bins": framing.T}
    frames = np.asarray(ToFrame(sensor_size=framing.frame_sensor, **counts)(events), dtype=np.int16)
    frames = frames.reshape(framing.T, *framing.frame_shape)
    return (frames > 0).astype(np.uint8) if framing.binary else frames


def _time_ordered(events: np.ndarray) -> np.ndarray:
    """``events`` sorted by ``t`` (stable), as tonic's slicers expect; a copy either way."""
    t = events["t"]
    if len(t) < 2 or bool(np.all(t[1:] >= t[:-1])):
        return events.copy()
    return events[np.argsort(t, kind="stable")]


def _on_sensor(events: np.ndarray, framing: Framing) -> np.ndarray:
    """The events whose coordinates and polarity lie on the (downsampled) sensor."""
    width, height, polarities = framing.frame_sensor
    keep = (events["x"] >= 0) & (events["x"] < width)
    if polarities > 1:  # a one-polarity sensor (SHD) takes any p: ToFrame sets it to 0
        keep &= (events["p"] >= 0) & (events["p"] < polarities)
    if not framing.audio:
        keep &= (events["y"] >= 0) & (events["y"] < height)
    return events[keep]


def fits_uint8(frames: np.ndarray) -> bool:
    """Whether every value of ``frames`` lies in ``0..255``."""
    return frames.dtype == np.uint8 or not frames.size or (int(frames.min()) >= 0 and int(frames.max()) <= 255)


class EventSource(Protocol):
    """What the binning loop reads: tonic's datasets give ``(events, label)`` per index."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]: ...


class TonicSource(EventSource, Protocol):
    """A tonic dataset: its folder (``location_on_system``/``folder_name``) and, for most, the
    sample files (``data``) and labels (``targets``) it listed when constructed."""

    location_on_system: str
    folder_name: str
    data: list[Any]
    targets: list[Any]


#: Allocates the ``[N, T, *frame_shape]`` array binned frames are written into, given its dtype.
Allocate = Callable[[np.dtype[Any]], np.ndarray]
#: Rows copied at a time when frames are widened from ``uint8`` to ``int16``.
WIDEN_CHUNK = 256


def bin_into(
    source: EventSource, indices: np.ndarray, framing: Framing, allocate: Allocate
) -> tuple[np.ndarray, np.ndarray]:
    """Bin the samples ``indices`` of ``source`` one at a time into rows of ``allocate(dtype)``:
    ``uint8`` until a count exceeds 255, then an ``int16`` array from a second ``allocate`` (the
    rows so far copied over in chunks). Only one sample's events and frames are held besides the
    array itself, so with a memory-mapped array a split never has to fit in memory. Returns the
    array last allocated and the labels ``[len(indices)]`` (``int64``)."""
    rows = allocate(np.dtype(np.uint8))
    labels = np.empty(len(indices), dtype=np.int64)
    for row, index in enumerate(indices):
        events, label = source[int(index)]
        frames = bin_events(events, framing)
        if rows.dtype == np.uint8 and not fits_uint8(frames):
            rows = _widened(rows, row, allocate)
        rows[row] = frames
        labels[row] = int(label)
    return rows, labels


def _widened(rows: np.ndarray, filled: int, allocate: Allocate) -> np.ndarray:
    """An ``int16`` array from ``allocate`` holding the first ``filled`` rows of ``rows``."""
    wide = allocate(np.dtype(np.int16))
    for start in range(0, filled, WIDEN_CHUNK):
        stop = min(start + WIDEN_CHUNK, filled)
        wide[start:stop] = rows[start:stop]
    return wide


def bin_samples(source: EventSource, indices: np.ndarray, framing: Framing) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``[len(indices), T, *frame_shape]`` (``uint8`` when every count fits, else
    ``int16``) and labels ``[len(indices)]`` (``int64``) of the samples ``indices``, in memory."""
    shape = (len(indices), framing.T, *framing.frame_shape)
    return bin_into(source, indices, framing, lambda dtype: np.zeros(shape, dtype=dtype))


#: The files of a binned split's folder: frames ``[N, T, *frame_shape]`` and labels ``[N]``.
FRAMES_FILE, LABELS_FILE = "frames.npy", "labels.npy"


def write_split(source: EventSource, indices: np.ndarray, framing: Framing, folder: Path) -> None:
    """Bin the samples ``indices`` of ``source`` into ``folder/frames.npy`` (written through a
    memory map, one sample at a time) and ``folder/labels.npy``; ``folder`` must exist."""
    shape = (len(indices), framing.T, *framing.frame_shape)
    allocated: list[Path] = []

    def on_disk(dtype: np.dtype[Any]) -> np.ndarray:
        allocated.append(folder / f"frames-{dtype.name}.npy")
        return np.lib.format.open_memmap(allocated[-1], mode="w+", dtype=dtype, shape=shape)

    rows, labels = bin_into(source, indices, framing, on_disk)
    if isinstance(rows, np.memmap):
        rows.flush()
    del rows
    os.replace(allocated[-1], folder / FRAMES_FILE)
    for narrow in allocated[:-1]:  # the uint8 file of frames that were widened to int16
        narrow.unlink()
    np.save(folder / LABELS_FILE, labels)


# -- binned splits on disk --------------------------------------------------------------------


class TemporaryFolder:
    """A fresh folder for binned frames that are not cached, removed with its contents when the
    object is collected (only in the process that made it, not in forked data-loader workers)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="snnarena-frames-"))
        weakref.finalize(self, _remove_in_process, os.getpid(), self.path)


def _remove_in_process(pid: int, path: Path) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class BinnedSplit:
    """Binned samples on disk: ``folder/frames.npy`` (``[N, T, *frame_shape]``, read through a
    memory map) and ``folder/labels.npy`` (``[N]``); ``rows`` picks and orders the samples used
    (``None``: all). ``keep`` holds a :class:`TemporaryFolder` alive while the split is used."""

    folder: Path
    rows: np.ndarray | None = None
    keep: TemporaryFolder | None = field(default=None, compare=False, repr=False)

    def select(self, rows: np.ndarray) -> BinnedSplit:
        """The samples ``rows`` of this split (indices into its current rows)."""
        chosen = np.asarray(rows, dtype=np.int64)
        return replace(self, rows=chosen if self.rows is None else self.rows[chosen])

    def memmap(self) -> np.ndarray:
        """All stored frames ``[N, T, *frame_shape]``, memory-mapped read-only."""
        return np.load(self.folder / FRAMES_FILE, mmap_mode="r")

    def labels(self) -> np.ndarray:
        """Labels ``[n]`` (``int64``) of the chosen rows."""
        labels = np.load(self.folder / LABELS_FILE)
        return labels if self.rows is None else labels[self.rows]

    def frames(self) -> np.ndarray:
        """Frames ``[n, T, *frame_shape]`` of the chosen rows, read into memory."""
        stored = self.memmap()
        return np.array(stored) if self.rows is None else stored[self.rows]

    def problem(self) -> str | None:
        """Why the folder does not hold a readable split (``None``: it does)."""
        try:
            n_frames = len(self.memmap())
            n_labels = len(np.load(self.folder / LABELS_FILE, mmap_mode="r"))
        except (OSError, ValueError) as err:
            return str(err)
        return None if n_frames == n_labels else f"{n_frames} frames but {n_labels} labels"

    def samples(self, shape: tuple[int, ...]) -> Samples:
        """The chosen rows as :class:`~snnarena.streaming.Samples` read lazily (each ``[T, *shape]``)."""
        frames = FrameFile(self, shape)
        return Samples(frames, torch.from_numpy(frames.labels))


class FrameFile(TorchDataset[tuple[Tensor, int]]):
    """Item ``i``: the frames of row ``i`` of a :class:`BinnedSplit` as a tensor ``[T, *shape]``
    (stored dtype) and its label, read from the memory-mapped file; each process (data-loader
    workers included) maps the file on its first read."""

    def __init__(self, split: BinnedSplit, shape: tuple[int, ...]) -> None:
        self.folder, self.shape = split.folder, shape
        self.labels = split.labels()
        self.rows = np.arange(len(self.labels)) if split.rows is None else split.rows
        self.keep = split.keep
        self._frames: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if self._frames is None:
            self._frames = np.load(self.folder / FRAMES_FILE, mmap_mode="r")
        frames = np.array(self._frames[int(self.rows[index])])
        return torch.from_numpy(frames.reshape(len(frames), *self.shape)), int(self.labels[index])

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for worker processes without the map (each opens its own) or the temporary
        folder's owner (it stays in the process that made it)."""
        return {**self.__dict__, "_frames": None, "keep": None}


def file_fingerprint(paths: Iterable[Path]) -> str:
    """A digest of the paths, sizes and modification times (ns) of ``paths``."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(parts: Mapping[str, Any]) -> str:
    """A hex digest of ``parts`` (JSON-serialisable), independent of key order."""
    text = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


#: Writes a binned split into the (existing, empty) folder it is given.
WriteSplit = Callable[[Path], None]


def uncached_split(write: WriteSplit) -> BinnedSplit:
    """The split ``write`` bins, in a :class:`TemporaryFolder` removed once the split is unused."""
    folder = TemporaryFolder()
    write(folder.path)
    return BinnedSplit(folder.path, keep=folder)


def cached_split(cache: Path, label: str, key: str, write: WriteSplit) -> BinnedSplit:
    """The split in ``cache/<label>-<key[:20]>/`` when a previous call stored it, else binned by
    ``write`` into a partial folder beside it and renamed into place (atomically: a run that
    stops half-way leaves no entry). A cache folder that cannot be written only costs the
    binning: a warning names it and the split is binned into a temporary folder."""
    path = cache / f"{label}-{key[:20]}"
    if path.is_dir():
        problem = BinnedSplit(path).problem()
        if problem is None:
            return BinnedSplit(path)
        warnings.warn(f"{path}: unreadable cache ({problem}); binning again", stacklevel=2)
        shutil.rmtree(path, ignore_errors=True)
    partial = cache / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
    try:
        partial.mkdir(parents=True)
    except OSError as err:
        warnings.warn(
            f"{cache}: cannot store binned frames there ({err}); they are binned again next time", stacklevel=2
        )
        return uncached_split(write)
    try:
        write(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        os.replace(partial, path)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if BinnedSplit(path).problem() is not None:
            raise
        # another process stored the same split first: use it
    return BinnedSplit(path)


# -- datasets read through tonic --------------------------------------------------------------


def framing_params(*, binary: bool = False, spatial_factor: float = 1.0) -> tuple[Param, ...]:
    """Parameters of :class:`Framing` every event dataset offers (with its defaults)."""
    return (
        Param(
            "binning", "str", "time", "T bins of equal time (time) or of equal event counts (count)", choices=BINNINGS
        ),
        Param(
            "spatial_factor",
            "float",
            spatial_factor,
            "downsample the sensor by this factor (tonic Downsample; 0.25 makes 128x128 32x32)",
            low=1e-3,
            high=1.0,
        ),
        Param("binary", "bool", binary, "1 where a pixel had an event in the bin (true) or the event count"),
        Param(
            "duration_ms",
            "float",
            None,
            "keep the first duration_ms of each sample (null: all of it)",
            low=1e-3,
            nullable=True,
        ),
        Param("cache", "bool", True, "keep the binned frames under <root>/snnarena-cache and reuse them"),
    )


#: ``flatten`` of the DVS datasets whose frames are ``[2, H, W]``.
FLATTEN = Param("flatten", "bool", False, "frames [2 * H * W] (true) or [2, H, W] (false, for conv nets)")


def stream_params() -> tuple[Param, ...]:
    """``stream`` and ``workers``: read the binned frames through data loaders."""
    return (stream_param("the binned frames sample by sample from the disk (the same batches)"), WORKERS)


def subset_params() -> tuple[Param, ...]:
    """``max_train``, ``max_test`` and ``val_fraction``."""
    return (
        MAX_TRAIN,
        MAX_TEST,
        VAL_FRACTION,
    )


def framing_of(params: Mapping[str, Any], sensor_size: tuple[int, int, int], T: int) -> Framing:
    """The :class:`Framing` of a dataset's resolved ``params``."""
    duration = params.get("duration_ms")
    return Framing(
        sensor_size=sensor_size,
        T=T,
        binning=str(params.get("binning", "time")),
        spatial_factor=float(params.get("spatial_factor", 1.0)),
        binary=bool(params.get("binary", False)),
        duration_us=None if duration is None else float(duration) * 1000.0,
    )


def offline(tonic_class: type) -> type:
    """A subclass of a tonic dataset class that reads the files present and never downloads.

    tonic downloads whenever its ``_check_exists`` fails (which also wants the archive file). The
    plugin checks the extracted files itself before constructing, so this subclass trusts that
    check, and its ``download`` refuses instead of reaching the network. It keeps the class name,
    which tonic uses as the dataset's folder under ``save_to``.
    """

    def refuse(self: Any) -> None:
        raise MissingDataFiles(
            f"{tonic_class.__name__}: files missing under {self.location_on_system}; never downloading"
        )

    members = {"_check_exists": lambda self: True, "download": refuse, "_copy_and_extract_local_data": refuse}
    return type(tonic_class.__name__, (tonic_class,), members)


class TonicEventDataset(Dataset):
    """An event dataset read from local files through a tonic dataset class and binned into ``T``
    frames (module docstring). Subclasses name the tonic class, the sensor, the layout they need
    (:meth:`missing`), how to get the files (:attr:`how_to_get`) and how to open a split."""

    #: tonic's ``(W, H, P)``.
    sensor_size: ClassVar[tuple[int, int, int]] = (1, 1, 1)
    n_classes: ClassVar[int] = 0
    #: One sentence: which archives to fetch from where, and where to put their contents.
    how_to_get: ClassVar[str] = ""

    #: The dataset's folder under the data root: tonic's class name (its ``save_to`` layout).
    folder_name: ClassVar[str] = ""

    @classmethod
    def folder(cls, params: Mapping[str, Any]) -> Path:
        """The dataset's folder: the data root, then :attr:`folder_name`."""
        return data_root(params.get("root")) / cls.folder_name

    @classmethod
    def missing(cls, params: Mapping[str, Any]) -> list[str]:
        """The expected files or folder patterns that are absent (empty: all present)."""
        raise NotImplementedError

    @classmethod
    def damaged(cls, params: Mapping[str, Any]) -> list[str]:
        """Problems of present files judged cheaply (one sample's header or size); default none."""
        return []

    def open_split(self, split: str) -> TonicSource:
        """The tonic dataset of ``split`` (``"train"`` or ``"test"``), constructed offline."""
        raise NotImplementedError

    def labels(self, source: TonicSource) -> np.ndarray:
        """Class indices of every sample of ``source``, without reading its events."""
        return np.asarray(source.targets, dtype=np.int64)

    def source_files(self, source: TonicSource) -> list[Path]:
        """The files ``source`` reads (their sizes and times key the cache)."""
        return [Path(path) for path in source.data]

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return int(np.prod(framing_of(params, cls.sensor_size, 1).frame_shape))

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> list[str]:
        """The files tonic reads are present (and one sample of each split looks readable)."""
        absent = cls.missing(params)
        if absent:
            return [str(cls.missing_error(params, absent))]
        return cls.damaged(params)

    @classmethod
    def missing_error(cls, params: Mapping[str, Any], absent: Sequence[str]) -> MissingDataFiles:
        return missing_files_error(cls.name, data_root(params.get("root")), absent, cls.how_to_get)

    def require_files(self) -> None:
        """Raise :class:`MissingDataFiles` (one message) when files are absent, or
        :class:`DamagedDataFile` when :meth:`damaged` finds a problem."""
        absent = self.missing(self.params)
        if absent:
            raise self.missing_error(self.params, absent)
        problems = self.damaged(self.params)
        if problems:
            raise DamagedDataFile("; ".join(problems))

    def split_frames(self, split: str, T: int, limit: int | None, seed: int, stream: int) -> BinnedSplit:
        """The binned ``split``, ``limit`` samples of it drawn by ``seed``."""
        source = self.open_split(split)
        indices = subset(len(source), limit, seed, stream)
        return self.binned(source, split, indices, T)

    def binned(self, source: TonicSource, split: str, indices: np.ndarray, T: int) -> BinnedSplit:
        """The samples ``indices`` of ``source`` binned on disk, through the cache unless
        ``cache = false``."""
        framing = framing_of(self.params, self.sensor_size, T)

        def write(folder: Path) -> None:
            write_split(source, indices, framing, folder)

        if not self.params.get("cache", True):
            return uncached_split(write)
        key = cache_key(
            {
                "dataset": self.name,
                "split": split,
                "framing": asdict(framing),
                "extra": self.cache_extra(),
                "samples": hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest(),
                "n_samples": len(source),
                "files": file_fingerprint(self.source_files(source)),
            }
        )
        folder = data_root(self.params.get("root")) / CACHE_FOLDER
        return cached_split(folder, f"{self.name}-{split}", key, write)

    def cache_extra(self) -> Mapping[str, Any]:
        """Parameters other than the framing that change what is read (e.g. a tonic option)."""
        return {}

    def sample_shape(self, T: int) -> tuple[int, ...]:
        """One step of a sample as the model sees it: the frame shape, or its size with ``flatten``."""
        shape = framing_of(self.params, self.sensor_size, T).frame_shape
        return (int(np.prod(shape)),) if self.params.get("flatten", False) else shape

    def bundle(self, train: BinnedSplit, test: BinnedSplit, T: int, seed: int) -> Bundle:
        """The bundle of binned splits: a :class:`DataBundle` holding their frames, or with
        ``stream = true`` a :class:`StreamingBundle` reading them from the disk through
        ``workers`` data-loader processes (the same batches for the same seed)."""
        shape = self.sample_shape(T)
        common: dict[str, Any] = {
            "T": T,
            "n_classes": self.n_classes,
            "encoding": "none",
            "seed": seed,
            "val_fraction": float(self.params["val_fraction"]),
        }
        if self.params.get("stream", False):
            workers = int(self.params.get("workers", 0))
            return StreamingBundle(train.samples(shape), test.samples(shape), workers=workers, **common)
        tensors = []
        for split in (train, test):
            x = split.frames()
            tensors += [torch.from_numpy(x.reshape(len(x), T, *shape)), as_labels(split.labels())]
        return DataBundle(*tensors, **common)

    def build(self, T: int, seed: int) -> Bundle:
        self.require_files()
        train = self.split_frames("train", T, self.params["max_train"], seed, STREAM_TRAIN_SUBSET)
        test = self.split_frames("test", T, self.params["max_test"], seed, STREAM_TEST_SUBSET)
        return self.bundle(train, test, T, seed)


def first_file(folder: Path, pattern: str) -> Path | None:
    """The first (by name) path under ``folder`` matching ``pattern`` (a glob such as
    ``user*_*/*.npy``), or ``None``; keep patterns narrow, every match is listed."""
    return min(folder.glob(pattern), default=None) if folder.is_dir() else None


def npy_events_problem(path: Path | None, columns: int = 4) -> list[str]:
    """Why the ``.npy`` event table ``path`` (``[N, columns]``) cannot be read, judged from its
    header (empty: fine, or no file to judge)."""
    if path is None:
        return []
    try:
        shape = np.load(path, mmap_mode="r").shape
    except (OSError, ValueError) as err:
        return [str(damaged_file_error(path, f"not a readable .npy file ({err})"))]
    if len(shape) != 2 or shape[1] != columns:
        return [str(damaged_file_error(path, f"holds an array of shape {list(shape)}, expected [N, {columns}] events"))]
    return []
