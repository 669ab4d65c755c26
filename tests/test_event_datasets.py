"""Event datasets read through tonic: the shared binning pipeline (time vs count bins, fields read
by name, downsampling), the disk cache, the files of N-MNIST, DVS Gesture, SHD, CIFAR10-DVS and
POKER-DVS written in their real on-disk formats and layouts, missing files reported without any
download, and the generated ``event_shapes`` dataset; each dataset trains one cell."""

from __future__ import annotations

import gc
import os
import socket
import struct
import tracemalloc
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import snnarena
from snnarena.cell import run_cell
from snnarena.data import Bundle, DataBundle, Dataset
from snnarena.errors import DataFilesError
from snnarena.host import HostConfig, PluginHost
from snnarena.params import params_of
from snnarena.streaming import Samples, StreamingBundle
from snnarena.suite import parse_suite
from snnarena_plugins.datasets import events
from snnarena_plugins.datasets._common import MissingDataFiles
from snnarena_plugins.datasets.cifar10_dvs import CIFAR10DVS
from snnarena_plugins.datasets.dvs_gesture import DVSGesture
from snnarena_plugins.datasets.events import Framing, bin_events, scaled_side
from snnarena_plugins.datasets.generated_events import EventShapes, make_event_shapes
from snnarena_plugins.datasets.nmnist import NMNIST
from snnarena_plugins.datasets.poker_dvs import POKERDVS
from snnarena_plugins.datasets.shd import SHD

EVENT_DATASETS: tuple[type[Dataset], ...] = (NMNIST, DVSGesture, SHD, CIFAR10DVS, POKERDVS, EventShapes)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network (tonic's downloads included) fails the test; local
    (Unix) sockets stay open, data-loader workers hand batches over through them."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    local_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family != socket.AF_UNIX:
            refuse(self, address)
        local_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr("tonic.download_utils.download_url", refuse)
    monkeypatch.setattr("tonic.download_utils.download_and_extract_archive", refuse)


def build(cls: type[Dataset], T: int = 4, seed: int = 0, **given: Any) -> DataBundle:
    return cls(**params_of(cls).resolve(given)).build(T=T, seed=seed)


def dvs_events(order: tuple[str, ...], **columns: np.ndarray) -> np.ndarray:
    """A structured event array with the fields in ``order`` (dtypes per field as tonic's sources vary)."""
    dtypes = {"x": np.int16, "y": np.uint16, "t": np.int64, "p": bool}
    array = np.zeros(len(columns["t"]), dtype=[(name, dtypes[name]) for name in order])
    for name in order:
        array[name] = columns[name]
    return array


# -- the pipeline ------------------------------------------------------------------------------

T_SIX = np.array([0, 10, 20, 30, 1000, 1001])
X_SIX, Y_SIX, P_SIX = np.array([0, 1, 2, 3, 4, 5]), np.array([5, 4, 3, 2, 1, 0]), np.array([1, 0, 1, 0, 1, 1])


def test_time_bins_split_the_span_and_count_bins_split_the_events() -> None:
    stream = dvs_events(("x", "y", "t", "p"), x=X_SIX, y=Y_SIX, t=T_SIX, p=P_SIX)
    by_time = bin_events(stream, Framing((8, 8, 2), T=2, binning="time"))
    by_count = bin_events(stream, Framing((8, 8, 2), T=2, binning="count"))
    assert by_time.shape == by_count.shape == (2, 2, 8, 8) and by_time.dtype == np.int16
    # time: windows of (1001 - 0) // 2 = 500 µs: the four early events, then none
    assert by_time.sum(axis=(1, 2, 3)).tolist() == [4, 0]
    # count: 6 // 2 = 3 events per bin
    assert by_count.sum(axis=(1, 2, 3)).tolist() == [3, 3]
    assert by_count[1, 1, 0, 5] == 1 and by_count[1, 0, 2, 3] == 1  # [polarity, y, x]


def test_fields_are_read_by_name_whatever_their_order() -> None:
    framing = Framing((8, 8, 2), T=3)
    usual = dvs_events(("x", "y", "t", "p"), x=X_SIX, y=Y_SIX, t=T_SIX, p=P_SIX)
    shuffled = dvs_events(("t", "p", "y", "x"), x=X_SIX, y=Y_SIX, t=T_SIX, p=P_SIX)
    unsorted = shuffled[[3, 0, 5, 1, 4, 2]]  # out of time order: sorted before binning
    expected = bin_events(usual, framing)
    assert expected.sum() > 0
    np.testing.assert_array_equal(bin_events(shuffled, framing), expected)
    np.testing.assert_array_equal(bin_events(unsorted, framing), expected)
    assert unsorted["t"].tolist() == [30, 0, 1001, 10, 1000, 20]  # the input is left as it was


def test_downsampling_binary_frames_and_a_duration() -> None:
    assert scaled_side(128, 0.25) == 32 and scaled_side(128, 0.375) == 48 and scaled_side(700, 0.2) == 140
    stream = dvs_events(("x", "y", "t", "p"), x=[127, 0, 64, 64], y=[127, 0, 3, 3], t=[0, 5, 10, 2000], p=[1, 0, 1, 1])
    framing = Framing((128, 128, 2), T=1, spatial_factor=0.25)
    frames = bin_events(stream, framing)
    assert frames.shape == (1, 2, 32, 32) and framing.frame_shape == (2, 32, 32)
    assert frames[0, 1, 31, 31] == 1 and frames[0, 0, 0, 0] == 1 and frames[0, 1, 0, 16] == 1  # t=2000 is the end
    binary = bin_events(stream, Framing((128, 128, 2), T=1, binary=True, duration_us=100.0))
    assert binary.dtype == np.uint8 and binary.sum() == 2  # t=2000 cut; the t=10 event ends the span


def test_audio_streams_have_no_y_and_one_polarity() -> None:
    stream = np.zeros(4, dtype=[("t", np.int64), ("x", np.int64), ("p", np.int64)])
    stream["t"], stream["x"], stream["p"] = [0, 10, 20, 40], [699, 0, 5, 5], 1
    framing = Framing((700, 1, 1), T=2, spatial_factor=0.2)
    frames = bin_events(stream, framing)
    assert frames.shape == (2, 140) and frames[0, 139] == 1 and frames[0, 0] == 1 and frames[1, 1] == 1


# -- files in the real formats and tonic's layouts --------------------------------------------


def nmnist_bytes(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray) -> bytes:
    """N-MNIST's 40-bit events: x, y, polarity bit + 23-bit timestamp (µs)."""
    t = t.astype(np.int64)
    packed = np.stack([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1).astype(np.uint8)
    return packed.tobytes()


def random_events(gen: np.random.Generator, n: int, label: int, side: int) -> dict[str, np.ndarray]:
    x, y = gen.integers(0, side, n), gen.integers(0, side, n)
    x[: n // 3] = label % side  # a label-dependent column
    return {"x": x, "y": y, "p": gen.integers(0, 2, n), "t": np.sort(gen.integers(0, 300_000, n))}


def write_nmnist(root: Path, per_digit: int = 2) -> None:
    gen = np.random.default_rng(1)
    for split, n in (("Train", per_digit), ("Test", 1)):
        for digit in range(10):
            folder = root / "NMNIST" / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ev = random_events(gen, 30, digit, 34)
                (folder / f"{i:05d}.bin").write_bytes(nmnist_bytes(ev["x"], ev["y"], ev["p"], ev["t"]))


def write_dvs_gesture(root: Path) -> None:
    """tonic's preprocessed layout: ``user<NN>_<lighting>/<label>.npy``, columns x, y, p, t (ms)."""
    gen = np.random.default_rng(2)
    for folder, users in (("ibmGestureTrain", (1, 2)), ("ibmGestureTest", (24,))):
        for user in users:
            path = root / "DVSGesture" / folder / f"user{user:02d}_fluorescent"
            path.mkdir(parents=True, exist_ok=True)
            for label in range(11):
                ev = random_events(gen, 40, label, 128)
                table = np.stack([ev["x"], ev["y"], ev["p"], ev["t"] // 1000], axis=1).astype(np.float64)
                np.save(path / f"{label}.npy", table)


def write_shd(root: Path, n_train: int = 40, n_test: int = 20) -> None:
    """The Zenke lab's HDF5 layout: ragged ``spikes/times`` (s) and ``spikes/units``, ``labels``, ``extra``."""
    gen = np.random.default_rng(3)
    folder = root / "SHD"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("shd_train.h5", n_train), ("shd_test.h5", n_test)):
        labels = np.arange(n) % 20
        with h5py.File(folder / name, "w") as handle:
            times = handle.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float32))
            units = handle.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
            for i, label in enumerate(labels):
                m = 25
                times[i] = np.sort(gen.uniform(0.0, 0.8, m)).astype(np.float32)
                units[i] = np.where(np.arange(m) < 8, label * 30, gen.integers(0, 700, m)).astype(np.uint16)
            handle["labels"] = labels.astype(np.uint8)
            handle["extra/keys"] = np.array([f"digit-{i}".encode() for i in range(20)])
            handle["extra/speaker"] = (np.arange(n) % 3).astype(np.uint8)


def write_poker_dvs(root: Path) -> None:
    """tonic's layout: ``pips_{train,test}/<suit>/*.npy``, columns t, x, y, p."""
    gen = np.random.default_rng(4)
    for folder, n in (("pips_train", 3), ("pips_test", 2)):
        for label, suit in enumerate(("cl", "he", "di", "sp")):
            path = root / "POKERDVS" / folder / suit
            path.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ev = random_events(gen, 30, label, 35)
                np.save(path / f"{suit}{i}.npy", np.stack([ev["t"], ev["x"], ev["y"], ev["p"]], axis=1))


CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# AEDAT 4 (inivation's DV format, read by the ``aedat`` package tonic uses): the magic line, a u32
# length and an ``IOHE`` flatbuffer whose description (XML) declares the streams, then packets of
# u32 stream id, u32 length and a size-prefixed ``EVTS`` flatbuffer (here uncompressed) holding a
# vector of 16-byte ``Event`` structs (t int64 µs, x int16, y int16, on bool, padding).
AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"
AEDAT4_EVENT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("padding", "V3")])


def aedat4_description(width: int, height: int) -> bytes:
    """The IOHeader's XML: one polarity-event stream (id 0) of a ``width x height`` sensor."""
    return (
        '<dv version="2.0"><node name="outInfo" path="/mainloop/output_file/outInfo/">'
        '<node name="0" path="/mainloop/output_file/outInfo/0/">'
        '<attr key="compression" type="string">NONE</attr>'
        '<attr key="typeIdentifier" type="string">EVTS</attr>'
        '<node name="info" path="/mainloop/output_file/outInfo/0/info/">'
        f'<attr key="sizeX" type="int">{width}</attr><attr key="sizeY" type="int">{height}</attr>'
        "</node></node></node></dv>"
    ).encode()


def aedat4_ioheader(description: bytes) -> bytes:
    """Flatbuffer ``IOHE``: root offset, identifier, a vtable of 3 fields (compression and
    file_data_position left at their defaults None and -1), the table, the description string."""
    text = struct.pack("<I", len(description)) + description + b"\0"
    text += b"\0" * (-len(text) % 4)
    vtable = struct.pack("<5H", 10, 8, 0, 0, 4) + b"\0\0"  # bytes 8..20
    return struct.pack("<I", 20) + b"IOHE" + vtable + struct.pack("<iI", 20 - 8, 4) + text


def aedat4_event_packet(events: np.ndarray) -> bytes:
    """Size-prefixed flatbuffer ``EVTS``: table at byte 20 (vtable at 12), its vector's length at
    28, so the 8-byte aligned events start at byte 32."""
    body = (
        struct.pack("<I", 16)  # root table at 4 + 16
        + b"EVTS"
        + struct.pack("<3H", 6, 8, 4)
        + b"\0\0"
        + struct.pack("<iI", 20 - 12, 4)  # table: its vtable, then the vector 4 bytes on
        + struct.pack("<I", len(events))
        + events.tobytes()
    )
    return struct.pack("<I", len(body)) + body


def aedat4_bytes(packets: list[np.ndarray], width: int = 128, height: int = 128) -> bytes:
    """A whole ``.aedat4`` file: header, then one packet per array of :data:`AEDAT4_EVENT`."""
    header = aedat4_ioheader(aedat4_description(width, height))
    data = b"".join(struct.pack("<II", 0, len(packet)) + packet for packet in map(aedat4_event_packet, packets))
    return AEDAT4_MAGIC + struct.pack("<I", len(header)) + header + data


def write_cifar10_dvs(root: Path, per_class: int = 4) -> None:
    """tonic's layout ``CIFAR10DVS/<class>/*.aedat4``, each a genuine AEDAT 4 file of two packets."""
    gen = np.random.default_rng(5)
    for label, name in enumerate(CIFAR_CLASSES):
        folder = root / "CIFAR10DVS" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ev = random_events(gen, 30, label, 128)
            events = np.zeros(30, dtype=AEDAT4_EVENT)
            events["t"], events["x"], events["y"], events["on"] = ev["t"], ev["x"], ev["y"], ev["p"]
            (folder / f"cifar10_{name}_{i}.aedat4").write_bytes(aedat4_bytes([events[:12], events[12:]]))


@pytest.fixture
def aedat() -> None:
    """CIFAR10-DVS reads ``.aedat4`` through the optional ``aedat`` package (snnarena[events])."""
    pytest.importorskip("aedat")


def test_a_genuine_aedat4_file_reads_through_tonic(tmp_path: Path, aedat: None) -> None:
    from tonic.io import read_aedat4

    events = np.zeros(5, dtype=AEDAT4_EVENT)
    events["t"], events["x"], events["y"], events["on"] = [5, 9, 20, 40, 41], [0, 1, 127, 3, 4], [9, 8, 0, 127, 6], 1
    events["on"][1] = 0
    path = tmp_path / "sample.aedat4"
    path.write_bytes(aedat4_bytes([events[:2], events[2:]]))
    read = read_aedat4(str(path))
    assert read["t"].tolist() == [5, 9, 20, 40, 41] and read["x"].tolist() == [0, 1, 127, 3, 4]
    assert read["y"].tolist() == [9, 8, 0, 127, 6] and read["on"].tolist() == [True, False, True, True, True]


WRITERS = {NMNIST: write_nmnist, DVSGesture: write_dvs_gesture, SHD: write_shd, POKERDVS: write_poker_dvs}


@pytest.mark.parametrize(
    ("cls", "shape", "n_classes", "sizes"),
    [
        (NMNIST, (2312,), 10, (18, 2, 10)),
        (DVSGesture, (2, 32, 32), 11, (20, 2, 11)),
        (SHD, (700,), 20, (36, 4, 20)),
        (POKERDVS, (2, 35, 35), 4, (11, 1, 8)),
    ],
    ids=["nmnist", "dvs_gesture", "shd", "poker_dvs"],
)
def test_files_in_tonics_layout_load_as_frames(
    tmp_path: Path, cls: type[Dataset], shape: tuple[int, ...], n_classes: int, sizes: tuple[int, int, int]
) -> None:
    WRITERS[cls](tmp_path)
    bundle = build(cls, T=5, root=str(tmp_path))
    info = bundle.info
    assert (info.input_shape, info.n_classes, info.T, info.task) == (shape, n_classes, 5, "classification")
    assert (info.n_train, info.n_val, info.n_test) == sizes
    assert bundle.x_train.dtype == torch.uint8 or bundle.x_train.dtype == torch.int16
    assert bundle.x_train.shape == (sizes[0], 5, *shape)
    assert cls.input_size(params_of(cls).resolve({"root": str(tmp_path)})) == int(np.prod(shape))
    assert sorted(torch.cat([bundle.y_test]).unique().tolist()) == list(range(n_classes))
    assert bundle.x_train.float().sum() > 0 and cls.check_files(params_of(cls).resolve({"root": str(tmp_path)})) == []
    xb, yb = next(bundle.train_batches(4, torch.Generator().manual_seed(0)))
    assert xb.dtype == torch.float32 and xb.shape == (5, 4, *shape) and yb.shape == (4,)


def test_shd_frames_count_the_spikes_of_each_channel(tmp_path: Path) -> None:
    write_shd(tmp_path, n_train=20, n_test=20)
    bundle = build(SHD, T=1, root=str(tmp_path), binning="count", val_fraction=0.5)
    # one bin of 25 // 1 events: every spike counted in its channel; the label's channel fires 8 times
    x = torch.cat([bundle.x_train, bundle.x_val]).float()[:, 0]
    y = torch.cat([bundle.y_train, bundle.y_val])
    assert torch.all(x.sum(dim=1) == 25) and torch.all(x[torch.arange(len(y)), y * 30] >= 8)


def test_cifar10_dvs_has_a_seeded_stratified_split(tmp_path: Path, aedat: None) -> None:
    write_cifar10_dvs(tmp_path, per_class=10)
    bundle = build(CIFAR10DVS, T=3, root=str(tmp_path), val_fraction=0.125)
    assert bundle.info.input_shape == (2, 48, 48) and bundle.info.n_classes == 10
    # 9:1, then round(90 / 8) of the training part for validation
    assert (bundle.info.n_train, bundle.info.n_val, bundle.info.n_test) == (79, 11, 10)
    assert sorted(bundle.y_test.tolist()) == list(range(10))  # one test sample per class
    again, other = (
        build(CIFAR10DVS, T=3, root=str(tmp_path), val_fraction=0.125),
        build(CIFAR10DVS, T=3, seed=1, root=str(tmp_path), val_fraction=0.125),
    )
    assert torch.equal(again.x_test, bundle.x_test) and not torch.equal(other.x_test, bundle.x_test)
    small = build(CIFAR10DVS, T=3, root=str(tmp_path), max_train=20, max_test=5)
    assert (small.info.n_train + small.info.n_val, small.info.n_test) == (20, 5)


def test_nmnist_frames_carry_the_events_of_the_file(tmp_path: Path) -> None:
    write_nmnist(tmp_path)
    counts = build(NMNIST, T=3, root=str(tmp_path), flatten=False, binary=False, binning="count", val_fraction=0.5)
    x = torch.cat([counts.x_train, counts.x_val]).float()
    assert torch.all(x.sum(dim=(1, 2, 3, 4)) == 30)  # 30 // 3 events in each of 3 bins: all of them
    label_column = x.sum(dim=(1, 2, 3))[:, :10].argmax(dim=1)  # [N, 34] events per x → the label's column
    assert torch.equal(label_column, torch.cat([counts.y_train, counts.y_val]))
    first = build(NMNIST, T=3, root=str(tmp_path), first_saccade_only=True, binning="count")
    assert first.x_train.float().sum() < build(NMNIST, T=3, root=str(tmp_path), binning="count").x_train.float().sum()


# -- the cache ---------------------------------------------------------------------------------


def count_binning(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch :func:`events.bin_events` to append to the returned list on every sample binned."""
    calls: list[int] = []
    real = events.bin_events

    def counting(stream: np.ndarray, framing: Framing) -> np.ndarray:
        calls.append(1)
        return real(stream, framing)

    monkeypatch.setattr(events, "bin_events", counting)
    return calls


def test_a_second_build_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_poker_dvs(tmp_path)
    calls = count_binning(monkeypatch)
    first = build(POKERDVS, T=4, root=str(tmp_path))
    entries = sorted((tmp_path / "snnarena-cache").iterdir())
    assert len(calls) == 20 and [entry.name[:15] for entry in entries] == ["poker_dvs-test-", "poker_dvs-train"]
    assert all(sorted(path.name for path in entry.iterdir()) == ["frames.npy", "labels.npy"] for entry in entries)
    second = build(POKERDVS, T=4, root=str(tmp_path))
    assert len(calls) == 20 and torch.equal(first.x_train, second.x_train) and torch.equal(first.y_val, second.y_val)
    streamed = build(POKERDVS, T=4, root=str(tmp_path), stream=True)  # streaming reads the same cache
    assert len(calls) == 20 and streamed.info == first.info
    build(POKERDVS, T=5, root=str(tmp_path))  # another T: binned again
    assert len(calls) == 40
    build(POKERDVS, T=4, root=str(tmp_path), binning="count")  # another framing
    assert len(calls) == 60
    sample = tmp_path / "POKERDVS" / "pips_test" / "cl" / "cl0.npy"
    os.utime(sample, ns=(1, 1))  # a changed source file
    build(POKERDVS, T=4, root=str(tmp_path))
    assert len(calls) == 68  # only the test split (8 samples) is binned again
    build(POKERDVS, T=4, root=str(tmp_path), cache=False)
    assert len(calls) == 88
    assert not list((tmp_path / "snnarena-cache").glob(".*"))  # no partial folder left behind


def test_an_unreadable_cache_entry_is_binned_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_poker_dvs(tmp_path)
    first = build(POKERDVS, T=3, root=str(tmp_path))
    (entry,) = (tmp_path / "snnarena-cache").glob("poker_dvs-test-*")
    (entry / "frames.npy").write_bytes(b"not an array")
    calls = count_binning(monkeypatch)
    with pytest.warns(UserWarning, match=f"{entry}: unreadable cache"):
        again = build(POKERDVS, T=3, root=str(tmp_path))
    assert len(calls) == 8 and torch.equal(again.x_test, first.x_test)
    assert build(POKERDVS, T=3, root=str(tmp_path)).info == first.info and len(calls) == 8


def test_counts_beyond_uint8_widen_the_stored_frames_to_int16(tmp_path: Path) -> None:
    framing = Framing((4, 4, 2), T=1, binning="count")
    quiet = dvs_events(("x", "y", "t", "p"), x=np.array([0, 1]), y=np.zeros(2), t=np.arange(2), p=np.ones(2))
    busy = dvs_events(("x", "y", "t", "p"), x=np.full(300, 2), y=np.zeros(300), t=np.arange(300), p=np.ones(300))
    source = [(quiet, 0), (quiet, 1), (busy, 2), (quiet, 3)]
    events.write_split(source, np.arange(4), framing, tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["frames.npy", "labels.npy"]
    stored = np.load(tmp_path / "frames.npy")
    assert stored.dtype == np.int16 and stored[2, 0, 1, 0, 2] == 300  # [sample, step, polarity, y, x]
    assert stored[0, 0, 1, 0, :2].tolist() == [1, 1] and stored[3].sum() == 2  # rows before and after the widening
    assert np.load(tmp_path / "labels.npy").tolist() == [0, 1, 2, 3]
    in_memory, _ = events.bin_samples(source, np.arange(4), framing)
    np.testing.assert_array_equal(in_memory, stored)
    assert events.bin_samples(source[:2], np.arange(2), framing)[0].dtype == np.uint8


# -- streaming ---------------------------------------------------------------------------------


def all_batches(bundle: Bundle, epochs: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two epochs of training batches (batch 3, one generator), then the validation and test batches."""
    generator = torch.Generator().manual_seed(11)
    batches = [batch for _ in range(epochs) for batch in bundle.train_batches(3, generator)]
    return batches + list(bundle.val_batches(4)) + list(bundle.test_batches(5))


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_gives_the_batches_of_the_in_memory_bundle(tmp_path: Path, workers: int) -> None:
    write_dvs_gesture(tmp_path)
    given: dict[str, Any] = {"root": str(tmp_path), "max_train": 17, "binning": "count", "val_fraction": 0.2}
    in_memory = build(DVSGesture, T=3, seed=4, **given)
    streamed = build(DVSGesture, T=3, seed=4, stream=True, workers=workers, **given)
    assert isinstance(streamed, StreamingBundle) and streamed.workers == workers
    assert streamed.info == in_memory.info and streamed.info.input_shape == (2, 32, 32)
    expected, got = all_batches(in_memory), all_batches(streamed)
    assert len(got) == len(expected) == 2 * 4 + 1 + 3
    for (x, y), (x_expected, y_expected) in zip(got, expected, strict=True):
        assert x.dtype == torch.float32 and x.shape[0] == 3
        assert torch.equal(x, x_expected) and torch.equal(y, y_expected)
    other_seed = build(DVSGesture, T=3, seed=5, stream=True, workers=workers, **given)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(all_batches(other_seed), expected, strict=False))


def test_a_streaming_bundle_of_temporal_samples_checks_their_steps() -> None:
    x, y = torch.zeros(6, 3, 2), torch.arange(6) % 2
    samples = Samples(TensorDataset(x, y), y)
    bundle = StreamingBundle(samples, samples, T=3, n_classes=2, encoding="none", seed=0, val_fraction=0.5)
    assert bundle.info.input_shape == (2,)
    with pytest.raises(ValueError, match="temporal samples have 3 steps, expected T=4"):
        StreamingBundle(samples, samples, T=4, n_classes=2, encoding="none", seed=0)


def test_cifar10_dvs_streams_its_split_of_the_binned_recordings(tmp_path: Path, aedat: None) -> None:
    write_cifar10_dvs(tmp_path, per_class=5)
    given: dict[str, Any] = {"root": str(tmp_path), "spatial_factor": 1.0, "binning": "count", "flatten": True}
    in_memory = build(CIFAR10DVS, T=2, **given)
    streamed = build(CIFAR10DVS, T=2, stream=True, **given)
    assert streamed.info == in_memory.info and streamed.info.input_shape == (2 * 128 * 128,)
    for (x, y), (x_expected, y_expected) in zip(all_batches(streamed), all_batches(in_memory), strict=True):
        assert torch.equal(x, x_expected) and torch.equal(y, y_expected)
    # the events of the files: 30 per recording, the first ten in the column x = label
    frames = in_memory.x_test.float().reshape(len(in_memory.y_test), 2, 2, 128, 128)
    assert torch.all(frames.sum(dim=(1, 2, 3, 4)) == 30)
    assert torch.all(frames.sum(dim=(1, 2, 3))[torch.arange(len(in_memory.y_test)), in_memory.y_test] >= 10)


def test_a_streaming_build_never_holds_a_split_in_memory(tmp_path: Path) -> None:
    gen = np.random.default_rng(6)
    for folder, users in (("ibmGestureTrain", range(1, 13)), ("ibmGestureTest", (24,))):
        for user in users:
            path = tmp_path / "DVSGesture" / folder / f"user{user:02d}_led"
            path.mkdir(parents=True)
            for label in range(11):
                ev = random_events(gen, 40, label, 128)
                np.save(path / f"{label}.npy", np.stack([ev["x"], ev["y"], ev["p"], ev["t"] // 1000], axis=1))
    given: dict[str, Any] = {"root": str(tmp_path), "spatial_factor": 1.0, "T": 8}
    split_bytes = 132 * 8 * 2 * 128 * 128  # the training split's uint8 frames: 34.6 MB
    for stream in (True, False):
        tracemalloc.start()
        bundle = build(DVSGesture, stream=stream, cache=not stream, **given)  # binned afresh, twice
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if stream:
            assert peak < split_bytes / 4, f"a streaming build peaked at {peak / 1e6:.1f} MB"
            assert isinstance(bundle, StreamingBundle)
        else:
            assert peak > split_bytes  # the measurement sees an in-memory split
    frames = next(bundle.train_batches(4, torch.Generator().manual_seed(0)))[0]
    assert frames.shape == (8, 4, 2, 128, 128)


def test_streaming_without_the_cache_bins_into_a_folder_removed_after_use(tmp_path: Path) -> None:
    write_poker_dvs(tmp_path)
    bundle = build(POKERDVS, T=2, root=str(tmp_path), stream=True, cache=False)
    assert not (tmp_path / "snnarena-cache").exists()
    assert isinstance(bundle, StreamingBundle)
    dataset = bundle.test.dataset
    assert isinstance(dataset, events.FrameFile)
    folder = dataset.folder
    assert (folder / "frames.npy").is_file() and len(list(bundle.test_batches(3))) == 3
    del bundle, dataset
    gc.collect()
    assert not folder.exists()


def test_an_unwritable_cache_folder_warns_and_still_builds(tmp_path: Path) -> None:
    write_poker_dvs(tmp_path)
    (tmp_path / "snnarena-cache").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="cannot store binned frames"):
        bundle = build(POKERDVS, T=2, root=str(tmp_path))
    assert bundle.info.n_test == 8


# -- missing and damaged files -----------------------------------------------------------------

MISSING = [
    (NMNIST, "NMNIST/Train/<digit 0-9>/*.bin", "garrickorchard.com/datasets/n-mnist"),
    (
        DVSGesture,
        "DVSGesture/ibmGestureTrain/user<NN>_<lighting>/<label>.npy",
        "figshare.com/ndownloader/files/38022171",
    ),
    (SHD, "SHD/shd_train.h5", "zenkelab.org/datasets/shd_train.h5.zip"),
    (CIFAR10DVS, "CIFAR10DVS/airplane/*.aedat4", "figshare.com/ndownloader/files/38023437"),
    (POKERDVS, "POKERDVS/pips_train/cl/*.npy", "github.com/neuromorphs/tonic"),
]


@pytest.mark.parametrize(("cls", "layout", "url"), MISSING, ids=[m[0].name for m in MISSING])
def test_missing_files_name_the_dataset_layout_and_source_and_never_download(
    tmp_path: Path, cls: type[Dataset], layout: str, url: str, aedat: None
) -> None:
    with pytest.raises(MissingDataFiles) as err:
        build(cls, root=str(tmp_path / "empty"))
    message = str(err.value)
    assert message.startswith(f"{cls.name}: data files not found under {tmp_path / 'empty'}")
    assert f"{tmp_path / 'empty'}/{layout}" in message and url in message and "never downloads" in message
    assert "\n" not in message
    (problem,) = cls.check_files(params_of(cls).resolve({"root": str(tmp_path / "empty")}))
    assert problem == message


def test_a_missing_split_is_named_alone(tmp_path: Path) -> None:
    write_nmnist(tmp_path)
    for sample in (tmp_path / "NMNIST" / "Test").glob("*/*.bin"):
        sample.unlink()
    (problem,) = NMNIST.check_files(params_of(NMNIST).resolve({"root": str(tmp_path)}))
    assert f"missing {tmp_path}/NMNIST/Test/<digit 0-9>/*.bin." in problem
    assert "NMNIST/Train/<digit" not in problem


def test_the_default_root_is_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNNARENA_DATA", str(tmp_path))
    write_poker_dvs(tmp_path)
    assert build(POKERDVS, T=2).info.n_test == 8


def test_damaged_files_are_named(tmp_path: Path) -> None:
    write_shd(tmp_path, n_train=4, n_test=4)
    with h5py.File(tmp_path / "SHD" / "shd_test.h5", "a") as handle:
        del handle["labels"]
    (problem,) = SHD.check_files(params_of(SHD).resolve({"root": str(tmp_path)}))
    assert problem.startswith(f"{tmp_path / 'SHD' / 'shd_test.h5'}: lacks the HDF5 datasets labels")
    with pytest.raises(DataFilesError, match="lacks the HDF5 datasets labels"):
        build(SHD, root=str(tmp_path))
    write_dvs_gesture(tmp_path)
    bad = next((tmp_path / "DVSGesture" / "ibmGestureTest").glob("*/*.npy"))
    np.save(bad, np.zeros((5, 3)))
    problems = DVSGesture.check_files(params_of(DVSGesture).resolve({"root": str(tmp_path)}))
    assert problems == [
        f"{bad}: holds an array of shape [5, 3], expected [N, 4] events; delete it and download it again"
    ]


def test_a_damaged_poker_dvs_file_in_its_suit_folder_is_named(tmp_path: Path) -> None:
    write_poker_dvs(tmp_path)
    bad = next((tmp_path / "POKERDVS" / "pips_test").glob("*/*.npy"))  # pips_test/<suit>/<name>.npy
    np.save(bad, np.zeros((5, 3)))
    problems = POKERDVS.check_files(params_of(POKERDVS).resolve({"root": str(tmp_path)}))
    assert problems == [
        f"{bad}: holds an array of shape [5, 3], expected [N, 4] events; delete it and download it again"
    ]


# -- event_shapes ------------------------------------------------------------------------------


def test_event_shapes_are_tonic_events_deterministic_per_seed() -> None:
    streams, labels = make_event_shapes(12, 16, 2, 100_000, 5.0, seed=3, stream=0)
    again, labels_again = make_event_shapes(12, 16, 2, 100_000, 5.0, seed=3, stream=0)
    other, _ = make_event_shapes(12, 16, 2, 100_000, 5.0, seed=4, stream=0)
    assert streams[0].dtype.names == ("x", "y", "t", "p") and labels.max() < 8
    assert all(np.array_equal(a, b) for a, b in zip(streams, again, strict=True)) and np.array_equal(
        labels, labels_again
    )
    assert not np.array_equal(streams[0], other[0])
    for stream in streams:
        assert np.all(np.diff(stream["t"]) >= 0) and stream["x"].max() < 16 and stream["t"].max() < 100_000
    moving_right = next(s for s, c in zip(streams, labels, strict=True) if c == 0)
    on = moving_right[moving_right["p"]]
    early, late = on[: len(on) // 4], on[-len(on) // 4 :]
    assert late["x"].mean() > early["x"].mean() + 2  # ON events follow the shape to the right


def test_event_shapes_bundle() -> None:
    bundle = build(EventShapes, T=8, n_train=40, n_test=12, n_shapes=2)
    assert bundle.info.input_shape == (2, 16, 16) and bundle.info.n_classes == 8
    assert (bundle.info.n_train, bundle.info.n_val, bundle.info.n_test) == (36, 4, 12)
    assert EventShapes.input_size(params_of(EventShapes).resolve({})) == 512
    same = build(EventShapes, T=8, n_train=40, n_test=12, n_shapes=2)
    assert torch.equal(same.x_train, bundle.x_train) and torch.equal(same.y_test, bundle.y_test)


# -- one cell through snnarena ----------------------------------------------------------------


class EventDatasetsPlugin:
    """Registers the event datasets the host does not know yet (before the built-ins list them)."""

    def __init__(self, known: set[str]) -> None:
        self.known = known

    @snnarena.hookimpl
    def register_datasets(self, register: Any) -> None:
        for cls in EVENT_DATASETS:
            if cls.name not in self.known:
                register(cls)


@pytest.fixture(scope="module")
def event_host() -> Iterator[PluginHost]:
    loaded = PluginHost.load(HostConfig())
    loaded.add_plugin(EventDatasetsPlugin(set(loaded.names("dataset"))), "event-datasets-test")
    try:
        yield loaded
    finally:
        loaded.remove_plugin("event-datasets-test")


CELL_SUITE = """
name = "events"
[train]
steps = 1
batch_size = 4
eval_batch_size = 64
optimizer = {{ name = "adam", lr = 0.01 }}
[grid]
seeds = [0]
T = [3]
[[methods]]
name = "bptt"
[[models]]
name = "{model}"
params = {{ hidden = [8] }}
neuron = {{ name = "lif", params = {{ tau = 2.0 }} }}
[[datasets]]
name = "{dataset}"
params = {params}
"""


@pytest.mark.parametrize(
    ("cls", "model"),
    [(NMNIST, "mlp"), (DVSGesture, "mlp"), (SHD, "mlp"), (CIFAR10DVS, "mlp"), (POKERDVS, "mlp"), (EventShapes, "mlp")],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_one_cell_trains_on_each_event_dataset(
    tmp_path: Path, event_host: PluginHost, cls: type[Dataset], model: str, aedat: None
) -> None:
    if cls is EventShapes:
        params = "{ n_train = 24, n_test = 8 }"
    else:
        {**WRITERS, CIFAR10DVS: write_cifar10_dvs}[cls](tmp_path)
        params = f'{{ root = "{tmp_path}" }}'
    text = CELL_SUITE.format(model=model, dataset=cls.name, params=params)
    (spec,) = list(parse_suite(text, event_host).cells)
    record = run_cell(spec, event_host, "r", "cpu")
    assert record.row["status"] == "done", record.row.get("reason")
    assert 0.0 <= record.row["test_accuracy"] <= 1.0
