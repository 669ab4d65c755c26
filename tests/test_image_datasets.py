"""Image datasets over torchvision (mnist, fashion_mnist, cifar10, cifar100, imagenet) on tiny
files written in the real formats, their seeded augmentation, and the streaming bundle."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from plugin_fixtures import TINY_SUITE
from torch import Tensor

import snnarena
from snnarena.cell import run_cell
from snnarena.data import Bundle, DataBundle, Dataset, validation_split
from snnarena.errors import DataFilesError
from snnarena.host import PluginHost
from snnarena.params import params_of
from snnarena.streaming import StreamingBundle
from snnarena.suite import parse_suite
from snnarena_plugins.datasets.images import CIFAR10, CIFAR100, FashionMNIST, ImageNet, resized_crop_box
from snnarena_plugins.datasets.mnist import MNIST

IMAGE_DATASETS: tuple[type[Dataset], ...] = (MNIST, FashionMNIST, CIFAR10, CIFAR100, ImageNet)


def build(cls: type[Dataset], root: Path, T: int = 3, seed: int = 0, **given: Any) -> Bundle:
    return cls(**params_of(cls).resolve({"root": str(root), **given})).build(T=T, seed=seed)


def batches(it: Iterator[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    return list(it)


def same_batches(a: list[tuple[Tensor, Tensor]], b: list[tuple[Tensor, Tensor]]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


def train_epoch(bundle: Bundle, seed: int, batch_size: int = 8) -> list[tuple[Tensor, Tensor]]:
    return batches(bundle.train_batches(batch_size, torch.Generator().manual_seed(seed)))


# -- fake files in the official formats -----------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: 0x00 0x00, type 0x08 (ubyte), ndim, big-endian uint32 sizes, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_idx_dataset(folder: Path, n_train: int = 30, n_test: int = 12) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": gen.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": gen.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


def dump(path: Path, obj: dict[str, Any]) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 10) -> dict[str, np.ndarray]:
    """cifar-10-batches-py/: data_batch_1..5 and test_batch ({data: uint8 [n, 3072] (R, G, B
    planes), labels}), batches.meta ({label_names})."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    gen = np.random.default_rng(2)
    train_x, train_y = [], []
    for i in range(1, 6):
        x = gen.integers(0, 256, (per_batch, 3072)).astype(np.uint8)
        y = [(i * per_batch + k) % 10 for k in range(per_batch)]
        dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": y, "data": x})
        train_x.append(x)
        train_y += y
    test_x = gen.integers(0, 256, (n_test, 3072)).astype(np.uint8)
    test_y = [k % 10 for k in range(n_test)]
    dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_y, "data": test_x})
    dump(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(10)], "num_vis": 3072})
    return {
        "train_x": np.concatenate(train_x),
        "train_y": np.array(train_y),
        "test_x": test_x,
        "test_y": np.array(test_y),
    }


def write_cifar100(root: Path, n_train: int = 40, n_test: int = 10) -> dict[str, np.ndarray]:
    """cifar-100-python/: train and test ({data, fine_labels, coarse_labels}), meta."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    gen = np.random.default_rng(3)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        x = gen.integers(0, 256, (n, 3072)).astype(np.uint8)
        fine = [(7 * k) % 100 for k in range(n)]
        dump(folder / name, {"data": x, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]})
        out[f"{name}_x"], out[f"{name}_y"] = x, np.array(fine)
    dump(folder / "meta", {"fine_label_names": [f"f{c}" for c in range(100)], "coarse_label_names": []})
    return out


def write_imagenet(
    root: Path, per_class: tuple[int, int] = (6, 2), wnids: tuple[str, ...] = ("n01", "n02", "n03")
) -> None:
    """imagenet/{train,val}/<wnid>/*.JPEG|*.png: tiny images of varied sizes."""
    gen = np.random.default_rng(4)
    for split, n in zip(("train", "val"), per_class, strict=True):
        for wnid in wnids:
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for k in range(n):
                h, w = int(gen.integers(10, 24)), int(gen.integers(10, 24))
                pixels = gen.integers(0, 256, (h, w, 3)).astype(np.uint8)
                suffix = ".JPEG" if k % 2 else ".png"
                Image.fromarray(pixels).save(folder / f"{wnid}_{k}{suffix}")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data root holding every image dataset."""
    write_idx_dataset(tmp_path / "MNIST" / "raw")
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw")
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    write_imagenet(tmp_path)
    return tmp_path


IMAGENET_SMALL = {"crop_size": 8, "resize_size": 10}


# -- loading -------------------------------------------------------------------------------------


def test_cifar10_is_read_in_the_official_order_and_layout(tmp_path: Path) -> None:
    arrays = write_cifar10(tmp_path)
    bundle = build(CIFAR10, tmp_path, encoding="direct")
    assert isinstance(bundle, DataBundle)
    info = bundle.info
    assert info.input_shape == (3, 32, 32) and info.n_classes == 10
    assert (info.n_train, info.n_val, info.n_test) == (27, 3, 10)
    train, val = validation_split(torch.from_numpy(arrays["train_y"]), 0.1, 0)
    images = torch.from_numpy(arrays["train_x"].reshape(30, 3, 32, 32))
    assert torch.equal(bundle.x_train, images[train]) and bundle.x_train.dtype == torch.uint8  # uint8 in memory
    assert bundle.y_val.tolist() == arrays["train_y"][val.numpy()].tolist()
    x, y = next(bundle.test_batches(4))
    assert x.shape == (3, 4, 3, 32, 32) and y.tolist() == arrays["test_y"][:4].tolist()
    expected = torch.from_numpy(arrays["test_x"][:4].reshape(4, 3, 32, 32)).float() / 255
    assert torch.equal(x[0], expected) and torch.equal(x[2], expected)


def test_cifar100_reads_the_fine_labels_and_flattens(tmp_path: Path) -> None:
    arrays = write_cifar100(tmp_path)
    bundle = build(CIFAR100, tmp_path, encoding="direct", flatten=True, max_test=5)
    assert bundle.info.n_classes == 100 and bundle.info.input_shape == (3072,) and bundle.info.n_test == 5
    x, y = next(bundle.test_batches(10))
    assert x.shape == (3, 5, 3072)
    assert set(y.tolist()) <= set(arrays["test_y"].tolist())
    assert CIFAR100.input_size(params_of(CIFAR100).resolve({})) == 3072


@pytest.mark.parametrize("cls", [MNIST, FashionMNIST])
def test_idx_datasets_read_torchvisions_raw_folder(tmp_path: Path, cls: type[Dataset]) -> None:
    folder = "MNIST" if cls is MNIST else "FashionMNIST"
    arrays = write_idx_dataset(tmp_path / folder / "raw")
    bundle = build(cls, tmp_path, encoding="direct", flatten=False)
    assert bundle.info.input_shape == (1, 28, 28) and (bundle.info.n_train, bundle.info.n_test) == (27, 12)
    x, y = next(bundle.test_batches(12))
    expected = torch.tensor(arrays["t10k-images-idx3-ubyte"].reshape(12, 1, 28, 28) / 255.0, dtype=torch.float32)
    assert torch.allclose(x[1], expected) and y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_imagenet_streams_fixed_size_images_from_class_folders(tmp_path: Path) -> None:
    write_imagenet(tmp_path)
    bundle = build(ImageNet, tmp_path, encoding="direct", **IMAGENET_SMALL)
    assert isinstance(bundle, StreamingBundle)
    info = bundle.info
    assert info.input_shape == (3, 8, 8) and info.n_classes == 3
    assert (info.n_train + info.n_val, info.n_test) == (18, 6) and info.n_val == 2
    x, y = next(bundle.test_batches(6))
    assert x.shape == (3, 6, 3, 8, 8) and y.tolist() == [0, 0, 1, 1, 2, 2]  # val/ is the test split, in order
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert ImageNet.input_size(params_of(ImageNet).resolve(IMAGENET_SMALL)) == 3 * 8 * 8


def test_imagenet_needs_the_same_classes_in_train_and_val(tmp_path: Path) -> None:
    write_imagenet(tmp_path)
    (tmp_path / "imagenet" / "val" / "n03").rename(tmp_path / "imagenet" / "val" / "n04")
    (problem,) = ImageNet.check_files(params_of(ImageNet).resolve({"root": str(tmp_path)}))
    assert "different class folders" in problem and "n03" in problem and "n04" in problem
    with pytest.raises(DataFilesError, match="different class folders"):
        build(ImageNet, tmp_path)


@pytest.mark.parametrize("cls", IMAGE_DATASETS)
def test_input_size_matches_the_built_data(data: Path, cls: type[Dataset]) -> None:
    given = IMAGENET_SMALL if cls is ImageNet else {}
    bundle = build(cls, data, **given)
    assert cls.input_size(params_of(cls).resolve(given)) == int(np.prod(bundle.info.input_shape))
    assert cls.check_files(params_of(cls).resolve({"root": str(data), **given})) == []


def test_the_root_defaults_to_the_data_root(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNNARENA_DATA", str(data))
    for cls in IMAGE_DATASETS:
        assert cls.check_files(params_of(cls).resolve({})) == [], cls.name


# -- missing and damaged files, never a download --------------------------------------------------

EXPECTED_IN_MESSAGE = {
    MNIST: ["MNIST/raw/train-images-idx3-ubyte", "ossci-datasets.s3.amazonaws.com/mnist"],
    FashionMNIST: ["FashionMNIST/raw/t10k-labels-idx1-ubyte", "fashion-mnist"],
    CIFAR10: ["cifar-10-batches-py/data_batch_5", "cifar-10-batches-py/batches.meta", "cifar-10-python.tar.gz"],
    CIFAR100: ["cifar-100-python/train", "cifar-100-python/meta", "cifar-100-python.tar.gz"],
    ImageNet: ["imagenet/train/<wnid>/*.JPEG", "imagenet/val/<wnid>/*.JPEG", "image-net.org", "valprep"],
}


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every torchvision download path raises."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a download was attempted")

    utils = torchvision.datasets.utils
    for name in ("download_url", "download_and_extract_archive", "download_file_from_google_drive"):
        monkeypatch.setattr(utils, name, refuse)
    for module in (torchvision.datasets.mnist, torchvision.datasets.cifar):
        monkeypatch.setattr(module, "download_and_extract_archive", refuse)
    for cls in (torchvision.datasets.MNIST, torchvision.datasets.CIFAR10):
        monkeypatch.setattr(cls, "download", refuse)


@pytest.mark.parametrize("cls", IMAGE_DATASETS)
def test_missing_files_give_one_message_and_no_download(tmp_path: Path, cls: type[Dataset], no_downloads: None) -> None:
    problems = cls.check_files(params_of(cls).resolve({"root": str(tmp_path)}))
    assert len(problems) == 1
    (message,) = problems
    assert message.startswith(f"{cls.name}: data files not found under {tmp_path}")
    assert "never downloads" in message
    for fragment in EXPECTED_IN_MESSAGE[cls]:
        assert fragment in message
    with pytest.raises(DataFilesError) as err:
        build(cls, tmp_path)
    assert str(err.value) == message


@pytest.mark.parametrize("cls", IMAGE_DATASETS)
def test_present_files_load_without_any_download(data: Path, cls: type[Dataset], no_downloads: None) -> None:
    given = IMAGENET_SMALL if cls is ImageNet else {}
    train_epoch(build(cls, data, **given), 0)


def test_mnist_says_to_decompress_or_move_the_files(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_idx_dataset(raw)
    (raw / "t10k-images-idx3-ubyte").rename(raw / "t10k-images-idx3-ubyte.gz")
    (problem,) = MNIST.check_files(params_of(MNIST).resolve({"root": str(tmp_path)}))
    assert f"missing {raw}/t10k-images-idx3-ubyte. " in problem and "train-images" not in problem.split(". ")[0]
    assert f"gunzip -k {raw}/*.gz" in problem
    flat = tmp_path / "flat"
    write_idx_dataset(flat)
    (problem,) = MNIST.check_files(params_of(MNIST).resolve({"root": str(flat)}))
    assert f"Files lie directly under {flat}: move them into {flat}/MNIST/raw/" in problem


def test_damaged_idx_and_cifar_files_are_named(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_idx_dataset(raw)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    (problem,) = MNIST.check_files(params_of(MNIST).resolve({"root": str(tmp_path)}))
    assert problem.startswith(f"{path}: truncated or damaged") and problem.endswith("download it again")
    with pytest.raises(DataFilesError, match="truncated or damaged"):
        build(MNIST, tmp_path)
    write_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"<html>not found</html>")
    (problem,) = CIFAR10.check_files(params_of(CIFAR10).resolve({"root": str(tmp_path)}))
    assert problem == f"{bad}: not a Python pickle; delete it and download it again"


# -- augmentation ----------------------------------------------------------------------------------

AUGMENTED = [
    pytest.param(CIFAR10, {"augment": True, "encoding": "direct"}, id="cifar10"),
    pytest.param(
        CIFAR10, {"augment": True, "normalize": True, "encoding": "direct", "stream": True}, id="cifar10-stream"
    ),
    pytest.param(ImageNet, {"augment": True, "encoding": "direct", **IMAGENET_SMALL}, id="imagenet"),
]


@pytest.mark.parametrize(("cls", "given"), AUGMENTED)
def test_augmentation_is_seeded_and_leaves_evaluation_alone(
    data: Path, cls: type[Dataset], given: dict[str, Any]
) -> None:
    augmented, again = build(cls, data, **given), build(cls, data, **given)
    plain = build(cls, data, **{**given, "augment": False})
    assert same_batches(train_epoch(augmented, 5), train_epoch(again, 5))
    assert not same_batches(train_epoch(augmented, 5), train_epoch(augmented, 6))
    assert not same_batches(train_epoch(augmented, 5), train_epoch(plain, 5))
    for y_aug, y_plain in zip(train_epoch(augmented, 5), train_epoch(plain, 5), strict=True):
        assert torch.equal(y_aug[1], y_plain[1])  # the same samples in the same order, only transformed
    for split in ("val_batches", "test_batches"):
        assert same_batches(batches(getattr(augmented, split)(4)), batches(getattr(plain, split)(4)))


def test_cifar_augmentation_is_a_padded_crop_and_a_flip(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    bundle = build(CIFAR10, tmp_path, augment=True, encoding="direct", max_train=10)
    assert isinstance(bundle, DataBundle)
    image = bundle.x_train[0].float() / 255
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    windows = {
        padded[:, top : top + 32, left : left + 32].flip(-1) if flip else padded[:, top : top + 32, left : left + 32]
        for top in range(9)
        for left in range(9)
        for flip in (False, True)
    }
    transform = bundle.transform
    assert transform is not None
    outputs = transform.train(
        bundle.x_train[:1].expand(40, 3, 32, 32), [torch.Generator().manual_seed(s) for s in range(40)]
    )
    for out in outputs:
        assert sum(torch.equal(out, w) for w in windows) >= 1
    assert len({out.numpy().tobytes() for out in outputs}) > 20  # different seeds, different windows
    single = transform.train([bundle.x_train[0]], [torch.Generator().manual_seed(7)])
    assert torch.equal(single[0], outputs[7])  # a sample's augmentation does not depend on its batch


def test_normalisation_uses_the_dataset_statistics(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    raw = build(CIFAR10, tmp_path, encoding="direct")
    normalized = build(CIFAR10, tmp_path, encoding="direct", normalize=True)
    (x, _), (z, _) = next(raw.test_batches(4)), next(normalized.test_batches(4))
    mean, std = torch.tensor(CIFAR10.mean).view(3, 1, 1), torch.tensor(CIFAR10.std).view(3, 1, 1)
    assert torch.allclose(z, (x - mean) / std)


def test_resized_crop_boxes_fit_the_image() -> None:
    generator = torch.Generator().manual_seed(0)
    for height, width in ((10, 30), (40, 12), (7, 7), (300, 200)):
        for _ in range(50):
            top, left, h, w = resized_crop_box(height, width, generator)
            assert 0 <= top and 0 <= left and 0 < h and 0 < w and top + h <= height and left + w <= width
    # an impossible scale falls back to the centred crop of the aspect clamped into 3/4 .. 4/3
    assert resized_crop_box(10, 40, generator, scale=(2.0, 3.0)) == (0, 13, 10, 13)
    assert resized_crop_box(40, 10, generator, scale=(2.0, 3.0)) == (13, 0, 13, 10)


# -- streaming -------------------------------------------------------------------------------------

STREAMED = [
    pytest.param(CIFAR10, {"encoding": "rate"}, id="cifar10-rate"),
    pytest.param(CIFAR10, {"encoding": "direct", "augment": True}, id="cifar10-augmented"),
    pytest.param(MNIST, {"encoding": "rate", "max_train": 20}, id="mnist-rate"),
    pytest.param(FashionMNIST, {"encoding": "static", "flatten": False}, id="fashion-static"),
]


@pytest.mark.parametrize(("cls", "given"), STREAMED)
def test_streaming_gives_the_in_memory_batches(data: Path, cls: type[Dataset], given: dict[str, Any]) -> None:
    held, streamed = build(cls, data, seed=3, **given), build(cls, data, seed=3, stream=True, **given)
    assert isinstance(held, DataBundle) and isinstance(streamed, StreamingBundle)
    assert held.info == streamed.info
    for seed in (0, 1):
        assert same_batches(train_epoch(held, seed, batch_size=7), train_epoch(streamed, seed, batch_size=7))
    assert same_batches(batches(held.val_batches(2)), batches(streamed.val_batches(2)))
    assert same_batches(batches(held.test_batches(5)), batches(streamed.test_batches(5)))


def test_streaming_with_workers_gives_the_same_batches_and_spares_the_global_rng(data: Path) -> None:
    given: dict[str, Any] = {"augment": True, "encoding": "rate", **IMAGENET_SMALL}
    alone, parallel = build(ImageNet, data, seed=1, **given), build(ImageNet, data, seed=1, workers=2, **given)
    state = torch.get_rng_state()
    first = train_epoch(alone, 4, batch_size=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert same_batches(first, train_epoch(parallel, 4, batch_size=4))
    assert same_batches(batches(alone.test_batches(4)), batches(parallel.test_batches(4)))
    assert len(first) == 4 and all(x.shape == (3, 4, 3, 8, 8) for x, _ in first)  # 16 of 16: whole batches


# -- one training step through snnarena --------------------------------------------------------


class ImagePlugin:
    """Registers the image datasets the host does not already know."""

    def __init__(self, known: set[str]) -> None:
        self.known = known

    @snnarena.hookimpl
    def register_datasets(self, register: Any) -> None:
        for cls in IMAGE_DATASETS:
            if cls.name not in self.known:
                register(cls)


@pytest.fixture
def image_host(arena_host: PluginHost) -> Iterator[PluginHost]:
    arena_host.add_plugin(ImagePlugin(set(arena_host.names("dataset"))), "image-datasets")
    try:
        yield arena_host
    finally:
        arena_host.remove_plugin("image-datasets")


@pytest.mark.parametrize(
    ("dataset", "params", "model"),
    [
        ("cifar10", "augment = true, normalize = true, encoding = 'direct'", "convnet"),
        ("cifar100", "flatten = true, stream = true", "mlp"),
        ("fashion_mnist", "max_test = 4", "mlp"),
        ("imagenet", "augment = true, crop_size = 8, resize_size = 10", "convnet"),
    ],
)
def test_one_training_step_through_a_cell(
    data: Path, image_host: PluginHost, dataset: str, params: str, model: str
) -> None:
    text = TINY_SUITE.replace("epochs = 2", "steps = 1").replace("batch_size = 16", "batch_size = 4")
    table = f'name = "{dataset}"\nparams = {{{{ root = "{data}", {params} }}}}'
    text = text.replace('name = "tiny_blobs"', table)
    if model == "convnet":
        text = text.replace(
            'name = "mlp"\nparams = {{ hidden = [16] }}', 'name = "convnet"\nparams = {{ channels = [4], fc = 8 }}'
        )
    suite = parse_suite(text.format(behaviours='["ok"]'), image_host)
    spec = next(c for c in suite.cells if c.method == "bptt")
    record = run_cell(spec, image_host, "r", "cpu")
    assert record.row["status"] == "done", record.row["reason"]
    assert record.row["train_steps"] == 1 and 0.0 <= record.row["test_accuracy"] <= 1.0
