"""Built-in dataset plugins: shapes, labels, determinism, splits, encodings, class information,
and the local-file loaders (MNIST IDX, N-MNIST .bin) on tiny files written in the real format.
The other torchvision image datasets are tested in test_image_datasets.py."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_image_datasets import write_idx, write_idx_dataset
from torch import Tensor

from snnarena.data import DataBundle, Dataset, validation_split
from snnarena.errors import DataFilesError
from snnarena.host import HostConfig, PluginHost
from snnarena.params import ParamError, params_of
from snnarena_plugins import datasets as ds
from snnarena_plugins.datasets.mnist1d import generate, resample
from snnarena_plugins.datasets.randman import make_randman


def make(cls: type[Dataset], **given: Any) -> Dataset:
    return cls(**params_of(cls).resolve(given))


def build(cls: type[Dataset], T: int = 8, seed: int = 0, **given: Any) -> DataBundle:
    return make(cls, **given).build(T=T, seed=seed)


def rows(x: Tensor) -> Counter[bytes]:
    """The samples of ``x`` as a multiset of byte strings (order-free comparison)."""
    flat = x.reshape(len(x), -1).numpy()
    return Counter(row.tobytes() for row in flat)


def same_bundle(a: DataBundle, b: DataBundle) -> bool:
    return all(
        torch.equal(u, v)
        for u, v in (
            (a.x_train, b.x_train),
            (a.y_train, b.y_train),
            (a.x_val, b.x_val),
            (a.y_val, b.y_val),
            (a.x_test, b.x_test),
            (a.y_test, b.y_test),
        )
    )


# (class, params, T, expected per-step input shape, expected sample count or None)
SMALL_RANDMAN: dict[str, Any] = {
    "nb_samples": 20,
    "nb_units": 16,
    "nb_classes": 4,
    "alpha": 2.0,
}  # 32 Fourier terms: fast
GENERATED = [
    pytest.param(ds.Digits, {}, 8, (64,), 1797, id="digits-rate"),
    pytest.param(ds.Digits, {"encoding": "direct", "flatten": False}, 4, (1, 8, 8), 1797, id="digits-direct-image"),
    pytest.param(ds.MNIST1D, {"num_samples": 1000}, 6, (40,), 1000, id="mnist1d-direct"),
    pytest.param(ds.MNIST1D, {"num_samples": 1000, "encoding": "rate"}, 6, (40,), 1000, id="mnist1d-rate"),
    pytest.param(ds.MNIST1D, {"num_samples": 1000, "encoding": "sequence"}, 25, (1,), 1000, id="mnist1d-sequence"),
    pytest.param(ds.Randman, SMALL_RANDMAN, 20, (16,), 80, id="randman"),
]


# -- registration ----------------------------------------------------------------------------


def test_hook_registers_every_dataset() -> None:
    got: list[type[Dataset]] = []
    ds.register_datasets(lambda cls, name=None: got.append(cls))
    assert sorted(c.name for c in got) == [
        "adding",
        "amazon",
        "cifar10",
        "cifar100",
        "cifar10_dvs",
        "coauthor",
        "copy",
        "digits",
        "dvs_gesture",
        "event_shapes",
        "fashion_mnist",
        "imagenet",
        "karate",
        "mnist",
        "mnist1d",
        "nmnist",
        "planetoid",
        "poker_dvs",
        "randman",
        "sbm",
        "seq_digits",
        "shd",
        "store_recall",
    ]
    for cls in got:
        assert issubclass(cls, Dataset) and cls.__doc__
        params_of(cls).resolve({})  # every default validates


def test_entry_point_loads_the_datasets() -> None:
    host = PluginHost.load(HostConfig(load_only=("datasets",)))
    assert not host.failures, host.failures
    assert {"digits", "mnist", "mnist1d", "nmnist", "randman"} <= set(host.names("dataset"))


def test_bad_params_are_refused() -> None:
    with pytest.raises(ParamError, match="encoding"):
        params_of(ds.Digits).resolve({"encoding": "sequence"})
    with pytest.raises(ParamError, match="test_fraction"):
        params_of(ds.Randman).resolve({"test_fraction": 1.5})
    with pytest.raises(ParamError, match="nb_units"):
        params_of(ds.Randman).resolve({"nb_units": 0})


# -- generic checks on the generated datasets -------------------------------------------------


@pytest.mark.parametrize(("cls", "given", "T", "shape", "n"), GENERATED)
def test_shapes_labels_and_sizes(
    cls: type[Dataset], given: dict[str, Any], T: int, shape: tuple[int, ...], n: int
) -> None:
    bundle = build(cls, T=T, **given)
    info = bundle.info
    assert info.input_shape == shape and info.T == T
    assert info.n_train + info.n_val + info.n_test == n
    assert info.n_val == round(0.1 * (info.n_train + info.n_val))  # the default val_fraction of the training part
    assert (len(bundle.x_train), len(bundle.x_val), len(bundle.x_test)) == (info.n_train, info.n_val, info.n_test)
    gen = torch.Generator().manual_seed(0)
    xb, yb = next(bundle.train_batches(16, gen))
    assert xb.shape == (T, 16, *shape) and xb.dtype == torch.float32
    assert yb.shape == (16,) and yb.dtype == torch.long
    for batches in (bundle.val_batches(4), bundle.test_batches(16)):
        xe, ye = next(batches)
        assert xe.shape == (T, len(ye), *shape) and xe.dtype == torch.float32 and ye.dtype == torch.long
    for y in (bundle.y_train, bundle.y_val, bundle.y_test):
        assert int(y.min()) >= 0 and int(y.max()) < info.n_classes
    assert set(bundle.y_train.tolist()) == set(range(info.n_classes))
    assert set(bundle.y_test.tolist()) == set(range(info.n_classes))
    for x in (bundle.x_train, bundle.x_val, bundle.x_test):
        assert torch.isfinite(x).all()


@pytest.mark.parametrize(("cls", "given", "T", "shape", "n"), GENERATED)
def test_same_seed_same_data_other_seed_other_data(
    cls: type[Dataset], given: dict[str, Any], T: int, shape: tuple[int, ...], n: int
) -> None:
    a, b, c = (build(cls, T=T, seed=s, **given) for s in (3, 3, 4))
    assert same_bundle(a, b)
    assert not same_bundle(a, c)
    batches = [next(x.train_batches(8, torch.Generator().manual_seed(1))) for x in (a, b)]
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])
    assert all(torch.equal(u[0], v[0]) for u, v in zip(a.test_batches(50), b.test_batches(50), strict=True))
    assert all(torch.equal(u[0], v[0]) for u, v in zip(a.val_batches(50), b.val_batches(50), strict=True))


@pytest.mark.parametrize(("cls", "given", "T", "shape", "n"), GENERATED)
def test_rate_and_spike_inputs_are_binary(
    cls: type[Dataset], given: dict[str, Any], T: int, shape: tuple[int, ...], n: int
) -> None:
    bundle = build(cls, T=T, **given)
    xb, _ = next(bundle.train_batches(32, torch.Generator().manual_seed(0)))
    xt, _ = next(bundle.test_batches(32))
    xv, _ = next(bundle.val_batches(32))
    if bundle.encoding == "rate" or cls is ds.Randman:
        for x in (xb, xt, xv):
            assert set(torch.unique(x).tolist()) <= {0.0, 1.0}
        assert bundle.x_train.min() >= 0 and bundle.x_train.max() <= 1
    elif bundle.encoding == "direct":
        assert torch.equal(xb[0], xb[-1])  # the same current at every step


def test_digits_split_is_a_stratified_partition() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    full = torch.tensor(raw.data / 16.0, dtype=torch.float32)
    bundle = build(ds.Digits, seed=5, test_fraction=0.3)
    assert rows(torch.cat([bundle.x_train, bundle.x_val, bundle.x_test])) == rows(full)  # every sample once
    counts = np.bincount(raw.target, minlength=10)
    test_counts = np.bincount(bundle.y_test.numpy(), minlength=10)
    assert np.array_equal(test_counts, np.round(counts * 0.3).astype(int))
    # the validation split is 10% of the training part, stratified: within one sample of each class's share
    train_counts = counts - test_counts
    val_counts = np.bincount(bundle.y_val.numpy(), minlength=10)
    assert val_counts.sum() == round(0.1 * train_counts.sum())
    assert np.all(np.abs(val_counts - 0.1 * train_counts) < 1)
    # labels follow their images
    label_of = {row.tobytes(): int(t) for row, t in zip(full.numpy(), raw.target, strict=True)}
    for x, y in ((bundle.x_train, bundle.y_train), (bundle.x_val, bundle.y_val), (bundle.x_test, bundle.y_test)):
        for row, t in zip(x.numpy(), y.tolist(), strict=True):
            assert label_of[row.tobytes()] == t
    assert build(ds.Digits, seed=6, test_fraction=0.3).y_test.tolist() != bundle.y_test.tolist()


def test_digits_values_and_image_layout() -> None:
    flat = build(ds.Digits, encoding="direct", seed=1)
    image = build(ds.Digits, encoding="direct", flatten=False, seed=1)
    assert torch.equal(flat.x_train, image.x_train.reshape(len(image.x_train), 64))
    assert flat.x_train.min() == 0 and flat.x_train.max() == 1


# -- mnist1d ----------------------------------------------------------------------------------


def test_mnist1d_matches_the_package_generator_and_leaves_global_rng_alone() -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    generate.cache_clear()
    np.random.seed(123)
    random.seed(123)
    x, y = generate(200, 5)
    after = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    assert after == (np.random.random(), random.random())  # the global generators were not touched

    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = 200, 5, 1.0
    state = np.random.get_state(), random.getstate()
    try:
        ref = make_dataset(args)
    finally:
        np.random.set_state(state[0])
        random.setstate(state[1])
    assert np.array_equal(y, ref["y"])
    np.testing.assert_allclose(x, ref["x"], atol=1e-5)
    assert x.shape == (200, 40)


def test_mnist1d_split_and_normalisation() -> None:
    _, y = generate(1000, 2)
    direct = build(ds.MNIST1D, seed=2, num_samples=1000, test_fraction=0.2)
    assert (direct.info.n_train, direct.info.n_val, direct.info.n_test) == (720, 80, 200)
    # train and validation are the package's (shuffled) first 800 samples, split by validation_split
    train, val = validation_split(torch.from_numpy(y[:800].copy()), 0.1, 2)
    assert direct.y_train.tolist() == y[:800][train.numpy()].tolist()
    assert direct.y_val.tolist() == y[:800][val.numpy()].tolist()
    assert direct.y_test.tolist() == y[800:].tolist()
    # standardised with the statistics of the training part alone
    assert abs(float(direct.x_train.mean())) < 1e-4 and abs(float(direct.x_train.std(unbiased=False)) - 1) < 1e-4
    assert abs(float(direct.x_val.mean())) > 1e-4
    rate = build(ds.MNIST1D, seed=2, num_samples=1000, encoding="rate")
    assert float(rate.x_train.min()) == 0.0 and float(rate.x_train.max()) == pytest.approx(1.0)
    for x in (rate.x_val, rate.x_test):
        assert x.min() >= 0 and x.max() <= 1
    splits = (direct.x_train, direct.x_val, direct.x_test)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not set(rows(a)) & set(rows(b))


def test_mnist1d_sequence_resamples_the_signal_over_time() -> None:
    seq40 = build(ds.MNIST1D, T=40, seed=2, num_samples=1000, encoding="sequence")
    direct = build(ds.MNIST1D, seed=2, num_samples=1000, encoding="direct")
    signal = direct.x_train.numpy()
    np.testing.assert_allclose(seq40.x_train[..., 0].numpy(), signal, rtol=1e-6, atol=1e-6)  # T=40: the signal
    seq = build(ds.MNIST1D, T=79, seed=2, num_samples=1000, encoding="sequence")
    # T=79: every other step falls on a sample of the signal
    np.testing.assert_allclose(seq.x_train[:, ::2, 0].numpy(), signal, rtol=1e-6, atol=1e-6)
    xb, _ = next(seq.test_batches(4))
    assert xb.shape == (79, 4, 1)
    line = np.array([[0.0, 1.0, 2.0, 3.0]])
    np.testing.assert_allclose(resample(line, 7), [[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]])


# -- randman ----------------------------------------------------------------------------------


def test_randman_one_spike_per_unit_and_partition() -> None:
    params = {"nb_classes": 3, "nb_units": 12, "nb_samples": 30, "dim_manifold": 2, "alpha": 2.0}
    T, seed = 30, 9
    bundle = build(ds.Randman, T=T, seed=seed, test_fraction=0.2, **params)
    x_all, _ = make_randman(nb_spikes=1, T=T, seed=seed, **params)
    assert x_all.shape == (90, T, 12)
    assert (bundle.info.n_train, bundle.info.n_val, bundle.info.n_test) == (65, 7, 18)
    assert np.bincount(bundle.y_test.numpy()).tolist() == [6, 6, 6]
    assert sorted(np.bincount(bundle.y_val.numpy()).tolist()) == [2, 2, 3]  # 7 of 3 x 24, stratified
    both = torch.cat([bundle.x_train, bundle.x_val, bundle.x_test])
    assert torch.all(both.sum(dim=1) == 1)  # exactly one spike per unit and sample
    assert rows(both) == rows(torch.from_numpy(x_all))  # every sample in exactly one split
    # per class and unit the spike times span the whole window (min-max scaled over the class)
    steps = both.argmax(dim=1)
    labels = torch.cat([bundle.y_train, bundle.y_val, bundle.y_test])
    for c in range(3):
        assert torch.all(steps[labels == c].min(dim=0).values == 0)
        assert torch.all(steps[labels == c].max(dim=0).values == T - 1)


def test_randman_params_change_the_data() -> None:
    base = build(ds.Randman, T=20, **SMALL_RANDMAN)
    assert not same_bundle(base, build(ds.Randman, T=20, **{**SMALL_RANDMAN, "alpha": 3.0}))
    assert not same_bundle(base, build(ds.Randman, T=20, **SMALL_RANDMAN, dim_manifold=1))
    two = build(ds.Randman, T=20, **SMALL_RANDMAN, nb_spikes=2)
    per_unit = torch.cat([two.x_train, two.x_val, two.x_test]).sum(dim=1)
    assert per_unit.min() >= 1 and per_unit.max() <= 2 and (per_unit == 2).float().mean() > 0.5
    # the time axis is T: spikes land at floor(s * T)
    short = build(ds.Randman, T=5, **SMALL_RANDMAN)
    assert short.x_train.shape[1] == 5 and torch.all(short.x_train.sum(dim=1) == 1)


# -- class information ------------------------------------------------------------------------


def _features(bundle: DataBundle, how: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-sample features of the encoded input ``[T, B, ...]``, for the train and test splits:
    ``sum`` over time (spike counts or summed current), each unit's spike ``time`` step (spike
    rasters), or the ``flat`` sequence."""
    out = []
    for batches in (bundle.train_batches(10**6, torch.Generator().manual_seed(0)), bundle.test_batches(10**6)):
        x, y = next(batches)
        if how == "sum":
            feats = x.sum(dim=0)
        elif how == "time":
            feats = x.argmax(dim=0)
        else:
            feats = x.transpose(0, 1)
        out.append((feats.reshape(len(y), -1).float().numpy(), y.numpy()))
    return out


@pytest.mark.parametrize(
    ("cls", "given", "T", "how", "least"),
    [
        pytest.param(ds.Digits, {}, 8, "sum", 0.85, id="digits-rate"),
        pytest.param(ds.MNIST1D, {"num_samples": 2000}, 4, "sum", 0.2, id="mnist1d-direct"),
        pytest.param(ds.MNIST1D, {"num_samples": 2000, "encoding": "sequence"}, 40, "flat", 0.2, id="mnist1d-sequence"),
        pytest.param(ds.Randman, {"nb_samples": 50}, 50, "time", 0.8, id="randman"),
    ],
)
def test_a_linear_classifier_beats_chance(
    cls: type[Dataset], given: dict[str, Any], T: int, how: str, least: float
) -> None:
    """A ridge classifier on simple features of the encoded input: the data carries its labels
    (chance is 0.1; a linear model reaches about 0.25 on MNIST-1D, 0.93 on digits, 0.99 on
    randman's spike times)."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.preprocessing import StandardScaler

    bundle = build(cls, T=T, seed=0, **given)
    (x_train, y_train), (x_test, y_test) = _features(bundle, how)
    scaler = StandardScaler().fit(x_train)
    accuracy = RidgeClassifier().fit(scaler.transform(x_train), y_train).score(scaler.transform(x_test), y_test)
    assert accuracy > least, f"{cls.name}: accuracy {accuracy:.3f} (chance {1 / bundle.info.n_classes:.2f})"


# -- mnist (IDX files read by torchvision.datasets.MNIST) -------------------------------------


def write_mnist(root: Path, n_train: int = 30, n_test: int = 12) -> dict[str, np.ndarray]:
    """The four uncompressed IDX files in ``root/MNIST/raw`` (torchvision's layout)."""
    return write_idx_dataset(root / "MNIST" / "raw", n_train, n_test)


def test_mnist_reads_torchvision_layout(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path)
    bundle = build(ds.MNIST, T=5, seed=0, root=str(tmp_path), encoding="direct")
    info = bundle.info
    assert info.input_shape == (784,) and (info.n_train, info.n_val, info.n_test) == (27, 3, 12)
    expected = torch.tensor(arrays["train-images-idx3-ubyte"].reshape(30, 784) / 255.0, dtype=torch.float32)
    labels = np.arange(30) % 10
    train, val = (i.numpy() for i in validation_split(torch.from_numpy(labels), 0.1, 0))
    np.testing.assert_allclose(bundle.x_train.numpy(), expected[train].numpy(), rtol=1e-6)
    np.testing.assert_allclose(bundle.x_val.numpy(), expected[val].numpy(), rtol=1e-6)
    assert bundle.y_train.tolist() == labels[train].tolist() and bundle.y_val.tolist() == labels[val].tolist()
    assert len(set(bundle.y_val.tolist())) == 3  # stratified: three different classes
    assert bundle.y_test.tolist() == ((np.arange(12) * 3) % 10).tolist()
    xb, yb = next(bundle.train_batches(8, torch.Generator().manual_seed(0)))
    assert xb.shape == (5, 8, 784) and yb.shape == (8,)


def test_mnist_image_shape_rate_and_subsets(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    image = build(ds.MNIST, T=3, seed=0, root=str(tmp_path), flatten=False)
    assert image.info.input_shape == (1, 28, 28)
    xb, _ = next(image.train_batches(10, torch.Generator().manual_seed(0)))
    assert xb.shape == (3, 10, 1, 28, 28) and set(torch.unique(xb).tolist()) <= {0.0, 1.0}
    small = [build(ds.MNIST, seed=s, root=str(tmp_path), max_train=10, max_test=4) for s in (1, 1, 2)]
    assert (small[0].info.n_train, small[0].info.n_val, small[0].info.n_test) == (9, 1, 4)
    assert same_bundle(small[0], small[1]) and not same_bundle(small[0], small[2])
    every_train_image = rows(torch.cat([image.x_train, image.x_val]).reshape(30, 784)).keys()
    assert rows(torch.cat([small[0].x_train, small[0].x_val])).keys() <= every_train_image
    assert not rows(small[0].x_train).keys() & rows(small[0].x_val).keys()
    wider = build(ds.MNIST, seed=1, root=str(tmp_path), max_train=10, max_test=4, val_fraction=0.5)
    assert (wider.info.n_train, wider.info.n_val) == (5, 5)


def test_mnist_missing_files_say_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        build(ds.MNIST, root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert f"{tmp_path / 'nowhere'}/MNIST/raw/t10k-images-idx3-ubyte" in message
    assert "download=True" in message and "gunzip" in message
    partial = tmp_path / "partial"
    write_mnist(partial)
    (partial / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        build(ds.MNIST, root=str(partial))


def test_mnist_root_defaults_to_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist(tmp_path)
    monkeypatch.setenv("SNNARENA_DATA", str(tmp_path))
    assert build(ds.MNIST, T=2).info.n_test == 12


# -- nmnist (.bin event files) ----------------------------------------------------------------


def encode_events(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray) -> bytes:
    """The original N-MNIST format: per event x, y, then polarity bit + 23-bit timestamp (µs)."""
    out = bytearray()
    for xi, yi, pi, ti in zip(x.tolist(), y.tolist(), p.tolist(), t.tolist(), strict=True):
        out += bytes([xi, yi, (pi << 7) | ((ti >> 16) & 0x7F), (ti >> 8) & 0xFF, ti & 0xFF])
    return bytes(out)


def write_nmnist(root: Path, per_digit: dict[str, int]) -> None:
    """``per_digit[split]`` files per digit in tonic's layout ``root/NMNIST/<split>/<digit>/*.bin``."""
    gen = np.random.default_rng(1)
    for split, n in per_digit.items():
        for digit in range(10):
            folder = root / "NMNIST" / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                m = 40
                x, y = gen.integers(0, 34, m), gen.integers(0, 34, m)
                x[:10] = digit  # a digit-dependent column, so the label is visible in the data
                t = np.sort(gen.integers(0, 300_000, m))
                (folder / f"{i:05d}.bin").write_bytes(encode_events(x, y, gen.integers(0, 2, m), t))


def test_nmnist_files_are_decoded_by_tonic_and_binned(tmp_path: Path) -> None:
    from tonic.datasets import NMNIST as TonicNMNIST
    from tonic.io import read_mnist_file

    # x=3, y=5, ON, t=70000 µs = 0x011170 → bytes 03 05 81 11 70
    assert encode_events(np.array([3]), np.array([5]), np.array([1]), np.array([70000])) == bytes.fromhex("0305811170")
    path = tmp_path / "s.bin"
    t = np.array([0, 100, 250, 299, 8_388_607])  # the largest 23-bit timestamp too
    x, y, p = np.array([0, 1, 33, 1, 2]), np.array([0, 2, 33, 2, 3]), np.array([0, 1, 1, 1, 0])
    path.write_bytes(encode_events(x, y, p, t))
    ev = read_mnist_file(str(path), dtype=TonicNMNIST.dtype)  # what the nmnist plugin reads with
    assert ev["t"].tolist() == t.tolist() and ev["p"].tolist() == [0, 1, 1, 1, 0]
    assert ev["x"].tolist() == [0, 1, 33, 1, 2] and ev["y"].tolist() == [0, 2, 33, 2, 3]
    for split, names in (("Train", ("00000", "00001")), ("Test", ("00000",))):
        (tmp_path / "NMNIST" / split / "7").mkdir(parents=True)
        for name in names:
            (tmp_path / "NMNIST" / split / "7" / f"{name}.bin").write_bytes(path.read_bytes())
    bundle = build(ds.NMNIST, T=5, root=str(tmp_path), flatten=False, binary=False, binning="count", val_fraction=0.5)
    frames = bundle.x_test[0]  # [T, 2, 34, 34]: one event per bin, [polarity, y, x]
    assert bundle.y_test.tolist() == [7] and frames.shape == (5, 2, 34, 34) and int(frames.sum()) == 5
    assert frames[0, 0, 0, 0] == 1 and frames[1, 1, 2, 1] == 1 and frames[2, 1, 33, 33] == 1 and frames[4, 0, 3, 2] == 1
    by_time = build(ds.NMNIST, T=4, root=str(tmp_path), flatten=False, binary=False, val_fraction=0.5).x_test[0]
    assert int(by_time[0].sum()) == 4 and int(by_time[1:].sum()) == 0  # bins of the span [0, 8388607]


def test_nmnist_loads_frames_from_the_folder_layout(tmp_path: Path) -> None:
    write_nmnist(tmp_path, {"Train": 3, "Test": 1})
    bundle = build(ds.NMNIST, T=8, seed=0, root=str(tmp_path), binning="count")
    info = bundle.info
    assert info.input_shape == (2312,) and (info.n_train, info.n_val, info.n_test) == (27, 3, 10)
    labels = np.array(sorted(list(range(10)) * 3))
    train, val = (i.numpy() for i in validation_split(torch.from_numpy(labels), 0.1, 0))
    assert bundle.y_train.tolist() == labels[train].tolist() and bundle.y_val.tolist() == labels[val].tolist()
    assert bundle.y_test.tolist() == list(range(10))
    xb, _ = next(bundle.train_batches(8, torch.Generator().manual_seed(0)))
    assert xb.shape == (8, 8, 2312) and set(torch.unique(xb).tolist()) <= {0.0, 1.0}
    image = build(ds.NMNIST, T=8, seed=0, root=str(tmp_path), flatten=False, binary=False, binning="count")
    assert image.info.input_shape == (2, 34, 34)
    assert torch.equal(image.x_train.clamp(max=1).reshape(27, 8, -1), bundle.x_train)
    assert torch.equal(image.x_val.clamp(max=1).reshape(3, 8, -1), bundle.x_val)
    total = image.x_train.float().sum() + image.x_val.float().sum()
    assert float(total) == 30 * 40  # counts, 40 // 8 events per bin: every event lands in one frame
    # the digit-dependent column carries the label
    column = torch.cat([image.x_train, image.x_val]).float().sum(dim=(1, 2, 3))  # [N, 34] events per x
    assert torch.equal(column[:, :10].argmax(dim=1), torch.cat([image.y_train, image.y_val]))
    sub = [build(ds.NMNIST, T=6, seed=s, root=str(tmp_path), max_train=7, max_test=3) for s in (0, 0, 1)]
    assert (sub[0].info.n_train, sub[0].info.n_val, sub[0].info.n_test) == (6, 1, 3)
    assert same_bundle(sub[0], sub[1]) and not same_bundle(sub[0], sub[2])


def test_nmnist_missing_files_say_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        build(ds.NMNIST, root=str(tmp_path))
    message = str(err.value)
    assert "NMNIST/Train/<digit 0-9>/*.bin" in message and str(tmp_path) in message and "Test.zip" in message
    write_nmnist(tmp_path, {"Train": 1})  # no Test/ folder
    with pytest.raises(FileNotFoundError, match="NMNIST/Test"):
        build(ds.NMNIST, root=str(tmp_path))


def test_randman_manifold_is_the_fourier_product() -> None:
    from snnarena_plugins.datasets.randman import eval_manifold, n_frequencies

    assert n_frequencies(1.0) == 1000 and n_frequencies(2.0) == 32 and n_frequencies(3.0) == 10
    gen = np.random.default_rng(0)
    theta, z = gen.random((3, 2, 3, 10)), gen.random((7, 2))
    k = np.arange(10)
    expected = np.ones((7, 3))
    for u in range(3):
        for d in range(2):
            a, b, c = theta[u, d]
            expected[:, u] *= (a / (k + 1.0) ** 1.5 * np.sin(2 * np.pi * (k * b * z[:, d, None] + c))).sum(-1)
    np.testing.assert_allclose(eval_manifold(theta, z, 1.5), expected, rtol=1e-10, atol=1e-12)


# -- cheap declarations used by suite validation ----------------------------------------------


@pytest.mark.parametrize(("cls", "given", "T", "shape", "n"), GENERATED)
def test_input_size_matches_the_built_data(
    cls: type[Dataset], given: dict[str, Any], T: int, shape: tuple[int, ...], n: int
) -> None:
    assert cls.input_size(params_of(cls).resolve(given)) == int(np.prod(shape))


def test_input_size_of_the_file_datasets(tmp_path: Path) -> None:
    write_mnist(tmp_path)  # into tmp_path/MNIST/raw
    write_nmnist(tmp_path, {"Train": 1, "Test": 1})
    for cls in (ds.MNIST, ds.NMNIST):
        for flatten in (True, False):
            bundle = build(cls, T=3, root=str(tmp_path), flatten=flatten)
            resolved = params_of(cls).resolve({"root": str(tmp_path), "flatten": flatten})
            assert cls.input_size(resolved) == int(np.prod(bundle.info.input_shape))


def mnist_problems(root: Path) -> list[str]:
    return ds.MNIST.check_files(params_of(ds.MNIST).resolve({"root": str(root)}))


def test_mnist_check_files_passes_good_files(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    assert mnist_problems(tmp_path) == []


def test_mnist_names_only_the_missing_file(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    (problem,) = mnist_problems(tmp_path)
    assert f"missing {tmp_path}/MNIST/raw/t10k-labels-idx1-ubyte. " in problem
    assert "train-images-idx3-ubyte," not in problem.split(". ")[0] and "t10k-images" not in problem.split(". ")[0]
    with pytest.raises(DataFilesError, match="missing .*t10k-labels-idx1-ubyte") as err:
        build(ds.MNIST, root=str(tmp_path))
    assert f"{tmp_path}/MNIST/raw/train-images" not in str(err.value)


def test_a_garbage_mnist_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    bad = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    bad.write_bytes(b"<html>this is an error page, not IDX data</html>")
    (problem,) = mnist_problems(tmp_path)
    assert problem.startswith(f"{bad}: not an IDX file of bytes (bad magic number 3c68746d)")
    assert problem.endswith("delete it and download it again")
    with pytest.raises(DataFilesError, match="delete it and download it again") as err:
        build(ds.MNIST, root=str(tmp_path))
    assert str(bad) in str(err.value)


def test_a_truncated_mnist_file_is_found_from_its_size(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    for name, cut in (("t10k-images-idx3-ubyte", 100), ("train-labels-idx1-ubyte", 3)):
        (raw / name).write_bytes((raw / name).read_bytes()[:-cut])
    found = mnist_problems(tmp_path)
    assert len(found) == 2
    promise = "truncated or damaged: its IDX header promises shape [30]"
    assert found[0].startswith(f"{raw / 'train-labels-idx1-ubyte'}: {promise}")
    assert found[1].startswith(f"{raw / 't10k-images-idx3-ubyte'}: truncated or damaged")


def test_mnist_files_that_do_not_belong_together(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(11) % 10)  # 12 images, 11 labels
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((30, 8, 8)))
    found = mnist_problems(tmp_path)
    assert (
        found[0] == f"{raw / 'train-images-idx3-ubyte'}: holds shape [30, 8, 8], expected [N, 28, 28]; "
        "is it the right file?"
    )
    assert found[1].endswith(
        f"holds 12 images but {raw / 't10k-labels-idx1-ubyte'} 11 labels; the two files must come from the same release"
    )


def nmnist_problems(root: Path) -> list[str]:
    return ds.NMNIST.check_files(params_of(ds.NMNIST).resolve({"root": str(root)}))


def test_nmnist_check_files(tmp_path: Path) -> None:
    write_nmnist(tmp_path, {"Train": 1})
    (problem,) = nmnist_problems(tmp_path)
    assert (
        f"missing {tmp_path}/NMNIST/Test/<digit 0-9>/*.bin." in problem and f"{tmp_path}/NMNIST/Train/" not in problem
    )
    write_nmnist(tmp_path, {"Test": 1})
    assert nmnist_problems(tmp_path) == []
    damaged = tmp_path / "NMNIST" / "Test" / "0" / "00000.bin"
    damaged.write_bytes(b"\x00" * 7)
    assert nmnist_problems(tmp_path) == [
        f"{damaged}: not a whole number of 5-byte N-MNIST events; delete it and download it again"
    ]
