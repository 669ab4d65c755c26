"""Image datasets read through torchvision from local files only (never downloaded).

* ``fashion_mnist`` (and ``mnist``, :mod:`.mnist`): the four uncompressed IDX files in
  ``<root>/FashionMNIST/raw/`` (``<root>/MNIST/raw/``), torchvision's layout;
* ``cifar10`` / ``cifar100``: the python-pickle batches unpacked from the official archives,
  ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
  ``<root>/cifar-100-python/{train, test, meta}``;
* ``imagenet``: ILSVRC2012 as class folders, ``<root>/imagenet/train/<wnid>/*.JPEG`` and
  ``<root>/imagenet/val/<wnid>/*.JPEG`` (torchvision's ``ImageFolder``); ``val`` is the test split.

``root`` defaults to :func:`snnarena.data.data_root`. Pixels are scaled to ``[0, 1]`` (optionally
normalised by the dataset's per-channel mean and std) and coded over ``T`` steps by ``direct``,
``rate`` or ``static``. The official train/test split is kept; ``max_train``/``max_test`` take a
subset drawn from the seed and ``val_fraction`` of the training part is held out for validation
(stratified). MNIST, Fashion-MNIST and CIFAR are held in memory (CIFAR as ``uint8``), or read
through data loaders with ``stream = true``; ImageNet always streams
(:class:`snnarena.streaming.StreamingBundle`, ``workers`` loader processes).

``augment = true`` applies the papers' standard augmentation to training samples only, seeded
per sample (the same for a seed, whatever ``workers``): CIFAR a random 32x32 crop of the image
zero-padded by 4 and a horizontal flip; ImageNet a random resized crop (scale 0.08-1, aspect
3/4-4/3) to ``crop_size`` and a horizontal flip, evaluated (and trained without augmentation)
resized to ``resize_size`` and centre-cropped to ``crop_size``.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor
from torch.utils.data import TensorDataset

from snnarena.data import ENCODINGS, Bundle, DataBundle, Dataset, data_root
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
    damaged_file_error,
    missing_files_error,
    root_param,
    stream_param,
    subset,
)

# -- parameters shared by the image datasets ----------------------------------------------------


ENCODING = Param(
    "encoding",
    "str",
    "rate",
    "direct (pixels as current), rate (Bernoulli spikes) or static (the constant input of a relaxing network)",
    choices=ENCODINGS,
)
STREAM = stream_param("samples")
AUGMENT = Param("augment", "bool", False, "the papers' standard augmentation of training samples (seeded)")
NORMALIZE = Param(
    "normalize",
    "bool",
    False,
    "subtract the dataset's per-channel mean and divide by its std (for direct coding: rate coding clamps to [0, 1])",
)


def _subset_splits(
    train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], params: Mapping[str, Any], seed: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``max_train``/``max_test`` samples of each ``(x, y)`` split, drawn from the seed."""
    chosen = []
    for (x, y), limit, stream in ((train, "max_train", STREAM_TRAIN_SUBSET), (test, "max_test", STREAM_TEST_SUBSET)):
        idx = torch.from_numpy(subset(len(y), params[limit], seed, stream))
        chosen.append((x[idx], y[idx]))
    return chosen[0], chosen[1]


def in_memory_or_streaming(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    params: Mapping[str, Any],
    *,
    T: int,
    seed: int,
    n_classes: int,
    transform: ImageTransform | None,
) -> Bundle:
    """A :class:`DataBundle` of the tensors, or with ``stream = true`` a :class:`StreamingBundle`
    reading them through data loaders; both give the same batches for the same generator."""
    common: dict[str, Any] = {
        "T": T,
        "n_classes": n_classes,
        "encoding": params["encoding"],
        "seed": seed,
        "val_fraction": float(params["val_fraction"]),
        "transform": transform,
    }
    if not params["stream"]:
        return DataBundle(*train, *test, **common)
    return StreamingBundle(
        Samples(TensorDataset(*train), train[1]),
        Samples(TensorDataset(*test), test[1]),
        workers=int(params["workers"]),
        **common,
    )


# -- transforms: stored sample -> input, with the standard augmentation ---------------------------


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return float(torch.empty(()).uniform_(low, high, generator=generator))


def _randint(high: int, generator: torch.Generator) -> int:
    """An integer in ``[0, high)``."""
    return int(torch.randint(high, (), generator=generator))


def _flip(generator: torch.Generator) -> bool:
    return _uniform(0.0, 1.0, generator) < 0.5


def resized_crop_box(
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop covering a share in ``scale`` of the image's area
    with aspect ``w/h`` log-uniform in ``ratio``: up to 10 draws, then the largest centred crop
    whose aspect is ``w/h`` clamped into ``ratio``."""
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(*scale, generator)
        aspect = math.exp(_uniform(log_low, log_high, generator))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return _randint(height - h + 1, generator), _randint(width - w + 1, generator), h, w
    aspect = min(max(width / height, ratio[0]), ratio[1])
    w, h = (width, round(width / aspect)) if width / height <= aspect else (round(height * aspect), height)
    w, h = min(w, width), min(h, height)
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class ImageTransform:
    """Stored images → float inputs in ``[0, 1]``, normalised by ``mean``/``std`` when given,
    flattened to ``[C*H*W]`` with ``flatten``: a :class:`~snnarena.data.SampleTransform`.

    Stored images are a ``uint8`` tensor ``[B, C, H, W]``, or a sequence of ``uint8 [C, H, W]``
    tensors or PIL images. ``crop_padding``: training takes a random ``H x W`` window of each
    image zero-padded by that many pixels, flipped horizontally with probability 1/2 (CIFAR; done
    for the whole batch at once). ``crop_size``: PIL images are evaluated resized (shorter side) to
    ``resize_size`` and centre-cropped to ``crop_size``; training takes a :func:`resized_crop_box`
    resized to ``crop_size`` and a flip (ImageNet). ``augment = False`` trains on the evaluation form.
    """

    augment: bool = False
    crop_padding: int = 0
    crop_size: int | None = None
    resize_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    flatten: bool = False

    @property
    def augments(self) -> bool:
        return self.augment

    def eval(self, samples: Any) -> Tensor:
        if isinstance(samples, Tensor):
            return self._finish(samples)
        return self._finish(torch.stack([self._decoded(sample) for sample in samples]))

    def train(self, samples: Any, generators: Sequence[torch.Generator]) -> Tensor:
        if not self.augment:
            return self.eval(samples)
        if not isinstance(samples, Tensor) and any(isinstance(sample, Image.Image) for sample in samples):
            crops = [self._random_resized_crop(s, g) for s, g in zip(samples, generators, strict=True)]
            return self._finish(torch.stack(crops))
        images = samples if isinstance(samples, Tensor) else torch.stack(list(samples))
        return self._finish(self._padded_crop_and_flip(images, generators))

    def _decoded(self, sample: Tensor | Image.Image) -> Tensor:
        """One stored image as ``uint8 [C, H, W]`` in its evaluation form."""
        if not isinstance(sample, Image.Image):
            return sample
        if self.crop_size is not None:
            sample = TF.center_crop(TF.resize(sample, [self.resize_size or self.crop_size]), [self.crop_size])
        return TF.pil_to_tensor(sample)

    def _random_resized_crop(self, image: Image.Image, generator: torch.Generator) -> Tensor:
        size = self.crop_size or min(image.height, image.width)
        top, left, h, w = resized_crop_box(image.height, image.width, generator)
        crop = TF.pil_to_tensor(TF.resized_crop(image, top, left, h, w, [size, size]))
        return crop.flip(-1) if _flip(generator) else crop

    def _padded_crop_and_flip(self, images: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """``[B, C, H, W]``: image ``b`` cut at offsets ``(top, left)`` from its zero-padded form,
        columns reversed if flipped; ``top``, ``left``, flip drawn in that order from ``generators[b]``."""
        pad = self.crop_padding
        height, width = images.shape[-2:]
        draws = torch.tensor([[_randint(2 * pad + 1, g), _randint(2 * pad + 1, g), _flip(g)] for g in generators])
        rows = draws[:, :1] + torch.arange(height)  # [B, H]
        steps = torch.arange(width)
        cols = draws[:, 1:2] + torch.where(draws[:, 2:3].bool(), width - 1 - steps, steps)  # [B, W]
        padded = TF.pad(images, [pad]).permute(0, 2, 3, 1)  # [B, H + 2p, W + 2p, C]
        batch = torch.arange(len(images))[:, None, None]
        return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def _finish(self, images: Tensor) -> Tensor:
        """``uint8 [B, C, H, W]`` → scaled, normalised, maybe flattened float."""
        x = images.float() / 255.0
        if self.mean is not None and self.std is not None:
            x = (x - torch.tensor(self.mean).view(-1, 1, 1)) / torch.tensor(self.std).view(-1, 1, 1)
        return x.flatten(1) if self.flatten else x


# -- MNIST-like IDX datasets (torchvision.datasets.MNIST and subclasses) --------------------------

IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_problem(path: Path) -> tuple[str | None, tuple[int, ...]]:
    """What is wrong with one uncompressed ``uint8`` IDX file judged from its header and size
    (``None``: fine), and the shape its header declares."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        ndim = head[3] if len(head) == 4 else 0
        sizes = handle.read(4 * ndim)
    if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= ndim <= 3:
        return str(damaged_file_error(path, f"not an IDX file of bytes (bad magic number {head.hex() or 'none'})")), ()
    if len(sizes) < 4 * ndim:
        return str(damaged_file_error(path, "IDX header cut short")), ()
    shape = tuple(int(v) for v in np.frombuffer(sizes, dtype=">u4"))
    if path.stat().st_size != 4 + 4 * ndim + math.prod(shape):
        return str(
            damaged_file_error(path, f"truncated or damaged: its IDX header promises shape {list(shape)}")
        ), shape
    images = "images" in path.name
    if (images and shape[1:] != (28, 28)) or (not images and len(shape) != 1):
        return (
            f"{path}: holds shape {list(shape)}, expected {'[N, 28, 28]' if images else '[N]'}; is it the right file?",
            shape,
        )
    return None, shape


def idx_problems(folder: Path) -> list[str]:
    """Problems of the four IDX files in ``folder``, present and uncompressed (empty: fine)."""
    problems: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    for name in IDX_FILES:
        problem, shapes[name] = _idx_problem(folder / name)
        problems += [problem] if problem else []
    for split in ("train", "t10k"):
        images, labels = shapes[f"{split}-images-idx3-ubyte"], shapes[f"{split}-labels-idx1-ubyte"]
        if images and labels and images[0] != labels[0]:
            problems.append(
                f"{folder / f'{split}-images-idx3-ubyte'} holds {images[0]} images but "
                f"{folder / f'{split}-labels-idx1-ubyte'} {labels[0]} labels; "
                "the two files must come from the same release"
            )
    return problems


class IdxImages(Dataset):
    """Base of the 28x28 grey-level IDX datasets read by a ``torchvision.datasets.MNIST`` class
    from ``<root>/<folder>/raw`` (``folder`` is the torchvision class's name)."""

    torchvision_class: ClassVar[type[torchvision.datasets.MNIST]] = torchvision.datasets.MNIST
    #: Where the official ``.gz`` archives are downloaded from.
    source: ClassVar[str] = ""

    @classmethod
    def params_for(cls, folder: str) -> tuple[Param, ...]:
        return (
            root_param(f"{folder}/raw/ (torchvision's layout)"),
            ENCODING,
            Param("flatten", "bool", True, "samples [784] (true) or images [1, 28, 28] (false, for conv nets)"),
            MAX_TRAIN,
            MAX_TEST,
            VAL_FRACTION,
            STREAM,
            WORKERS,
        )

    @classmethod
    def raw_folder(cls, params: Mapping[str, Any]) -> Path:
        return data_root(params.get("root")) / cls.torchvision_class.__name__ / "raw"

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return 28 * 28

    @classmethod
    def missing(cls, params: Mapping[str, Any]) -> MissingDataFiles | None:
        """The one error naming the missing files, where they go and where they come from."""
        folder = cls.raw_folder(params)
        absent = [name for name in IDX_FILES if not (folder / name).is_file()]
        if not absent:
            return None
        folder_name = cls.torchvision_class.__name__
        how = (
            f"Put the four uncompressed IDX files {', '.join(IDX_FILES)} into <root>/{folder_name}/raw/ "
            f"(torchvision's layout): download the .gz archives from {cls.source} and gunzip them there, or run "
            f"`torchvision.datasets.{folder_name}(<root>, download=True)` on a machine with internet access "
            "and copy <root>."
        )
        packed = [name for name in absent if (folder / f"{name}.gz").is_file()]
        if packed:
            how += f" Compressed files are there: decompress them with `gunzip -k {folder}/*.gz`."
        root = folder.parent.parent
        if any((root / name).is_file() for name in absent):
            how += f" Files lie directly under {root}: move them into {folder}/."
        return missing_files_error(cls.name, root, [str(folder / name) for name in absent], how)

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> list[str]:
        """The four IDX files exist uncompressed, their headers are MNIST's and their sizes match."""
        error = cls.missing(params)
        return [str(error)] if error else idx_problems(cls.raw_folder(params))

    def build(self, T: int, seed: int) -> Bundle:
        missing = self.missing(self.params)
        if missing:
            raise missing
        problems = idx_problems(self.raw_folder(self.params))
        if problems:
            raise DamagedDataFile("; ".join(problems))
        root = str(self.raw_folder(self.params).parent.parent)
        splits = []
        for train in (True, False):
            data = self.torchvision_class(root, train=train, download=False)
            shape = (784,) if self.params["flatten"] else (1, 28, 28)
            splits.append((data.data.reshape(len(data.data), *shape).float() / 255.0, data.targets.long()))
        train_split, test_split = _subset_splits(splits[0], splits[1], self.params, seed)
        return in_memory_or_streaming(
            train_split, test_split, self.params, T=T, seed=seed, n_classes=10, transform=None
        )


class FashionMNIST(IdxImages):
    """Fashion-MNIST 28x28 clothing images (60000/10000 split) from local IDX files, coded over T steps."""

    name = "fashion_mnist"
    torchvision_class = torchvision.datasets.FashionMNIST
    source = torchvision.datasets.FashionMNIST.mirrors[0]
    PARAMS = IdxImages.params_for("FashionMNIST")


# -- CIFAR-10 / CIFAR-100 (torchvision.datasets.CIFAR10 / CIFAR100) -------------------------------


class _LocalCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 reader that checks the files exist but skips the MD5 sums (a full
    read of every file on each build; a damaged file fails to unpickle instead)."""

    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


class _LocalCIFAR100(torchvision.datasets.CIFAR100):
    """torchvision's CIFAR-100 reader without the MD5 sums (see :class:`_LocalCIFAR10`)."""

    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR100.test_list]
    meta = {**torchvision.datasets.CIFAR100.meta, "md5": None}


class Cifar(Dataset):
    """Base of CIFAR-10/100: the python-pickle batches in ``<root>/<base_folder>/``."""

    torchvision_class: ClassVar[type[torchvision.datasets.CIFAR10]] = _LocalCIFAR10
    n_classes: ClassVar[int] = 10
    mean: ClassVar[tuple[float, float, float]] = (0.0, 0.0, 0.0)
    std: ClassVar[tuple[float, float, float]] = (1.0, 1.0, 1.0)

    @classmethod
    def params_for(cls, folder: str) -> tuple[Param, ...]:
        return (
            root_param(f"{folder}/ (unpacked from the official archive)"),
            ENCODING,
            Param("flatten", "bool", False, "images [3, 32, 32] (false, for conv nets) or samples [3072] (true)"),
            AUGMENT,
            NORMALIZE,
            MAX_TRAIN,
            MAX_TEST,
            VAL_FRACTION,
            STREAM,
            WORKERS,
        )

    @classmethod
    def files(cls) -> list[str]:
        tv = cls.torchvision_class
        return [name for name, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]

    @classmethod
    def folder(cls, params: Mapping[str, Any]) -> Path:
        return data_root(params.get("root")) / cls.torchvision_class.base_folder

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return 3 * 32 * 32

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> list[str]:
        """Every batch file exists and starts like a Python pickle (two bytes read per file)."""
        folder = cls.folder(params)
        absent = [name for name in cls.files() if not (folder / name).is_file()]
        if absent:
            return [str(cls.missing_error(params, absent))]
        problems = []
        for name in cls.files():
            with open(folder / name, "rb") as handle:
                if handle.read(1) != b"\x80":
                    problems.append(str(damaged_file_error(folder / name, "not a Python pickle")))
        return problems

    @classmethod
    def missing_error(cls, params: Mapping[str, Any], absent: Sequence[str]) -> Exception:
        folder, tv = cls.folder(params), cls.torchvision_class
        how = (
            f"Download {tv.url} (the python version) and unpack it into <root> (`tar -xzf {tv.filename} -C <root>`), "
            f"which creates <root>/{tv.base_folder}/ holding {', '.join(cls.files())}."
        )
        return missing_files_error(cls.name, folder.parent, [str(folder / name) for name in absent], how)

    def transform(self) -> ImageTransform:
        normalize = self.params["normalize"]
        return ImageTransform(
            augment=self.params["augment"],
            crop_padding=4,
            mean=self.mean if normalize else None,
            std=self.std if normalize else None,
            flatten=self.params["flatten"],
        )

    def _read(self, train: bool) -> tuple[Tensor, Tensor]:
        """``uint8 [N, 3, 32, 32]`` images and labels of one split, through torchvision."""
        folder = self.folder(self.params)
        try:
            data = self.torchvision_class(str(folder.parent), train=train, download=False)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, RuntimeError) as err:
            raise damaged_file_error(
                folder, f"holds a file torchvision cannot read ({type(err).__name__}: {err})"
            ) from None
        images = torch.from_numpy(np.ascontiguousarray(data.data.transpose(0, 3, 1, 2)))
        return images, torch.tensor(data.targets, dtype=torch.long)

    def build(self, T: int, seed: int) -> Bundle:
        problems = self.check_files(self.params)
        if problems:
            raise DamagedDataFile("; ".join(problems))
        train, test = _subset_splits(self._read(True), self._read(False), self.params, seed)
        return in_memory_or_streaming(
            train, test, self.params, T=T, seed=seed, n_classes=self.n_classes, transform=self.transform()
        )


class CIFAR10(Cifar):
    """CIFAR-10 32x32 colour images, 10 classes (50000/10000 split), from the local python batches."""

    name = "cifar10"
    torchvision_class = _LocalCIFAR10
    n_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    PARAMS = Cifar.params_for("cifar-10-batches-py")


class CIFAR100(Cifar):
    """CIFAR-100 32x32 colour images, 100 fine classes (50000/10000 split), from the local python files."""

    name = "cifar100"
    torchvision_class = _LocalCIFAR100
    n_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    PARAMS = Cifar.params_for("cifar-100-python")


# -- ImageNet (ILSVRC2012 as class folders, torchvision.datasets.ImageFolder), always streamed ------

IMAGENET_SOURCE = "https://image-net.org/download.php"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _class_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir()) if folder.is_dir() else []


class ImageNet(Dataset):
    """ImageNet (ILSVRC2012) from local class folders, streamed through data loaders; the official
    validation images are the test split."""

    name = "imagenet"
    PARAMS = (
        root_param("imagenet/train/<wnid>/*.JPEG and imagenet/val/<wnid>/*.JPEG"),
        ENCODING,
        AUGMENT,
        NORMALIZE,
        Param("crop_size", "int", 224, "side of the square input images", low=1, high=4096),
        Param(
            "resize_size",
            "int",
            256,
            "evaluation resizes the shorter side to this, then centre-crops",
            low=1,
            high=8192,
        ),
        MAX_TRAIN,
        MAX_TEST,
        VAL_FRACTION,
        WORKERS,
    )

    @classmethod
    def folder(cls, params: Mapping[str, Any]) -> Path:
        return data_root(params.get("root")) / "imagenet"

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return 3 * int(params["crop_size"]) ** 2

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> list[str]:
        """``train/`` and ``val/`` hold the same class folders (listing the folders only)."""
        folder = cls.folder(params)
        train, val = _class_folders(folder / "train"), _class_folders(folder / "val")
        how = (
            f"Get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from {IMAGENET_SOURCE} (registration "
            "required); unpack each class's tar of the training archive into <root>/imagenet/train/<wnid>/ and sort "
            "the validation images into <root>/imagenet/val/<wnid>/ by their ground-truth class (e.g. with the "
            "widely used valprep.sh), so that <root>/imagenet/train/n01440764/n01440764_10026.JPEG and "
            "<root>/imagenet/val/n01440764/ILSVRC2012_val_00000293.JPEG exist."
        )
        absent = [f"{folder / split}/<wnid>/*.JPEG" for split, found in (("train", train), ("val", val)) if not found]
        if absent:
            return [str(missing_files_error(cls.name, folder.parent, absent, how))]
        if train != val:
            only = sorted(set(train) ^ set(val))[:5]
            return [
                f"imagenet: {folder}/train and {folder}/val hold different class folders (e.g. {', '.join(only)}); "
                "both need the same <wnid> folders"
            ]
        return []

    def build(self, T: int, seed: int) -> Bundle:
        problems = self.check_files(self.params)
        if problems:
            raise DamagedDataFile("; ".join(problems))
        folder = self.folder(self.params)
        splits = []
        for split, limit, stream in (
            ("train", "max_train", STREAM_TRAIN_SUBSET),
            ("val", "max_test", STREAM_TEST_SUBSET),
        ):
            images = torchvision.datasets.ImageFolder(str(folder / split))
            labels = torch.tensor(images.targets, dtype=torch.long)
            splits.append(
                Samples(images, labels).subset(torch.from_numpy(subset(len(labels), self.params[limit], seed, stream)))
            )
        normalize = self.params["normalize"]
        transform = ImageTransform(
            augment=self.params["augment"],
            crop_size=int(self.params["crop_size"]),
            resize_size=int(self.params["resize_size"]),
            mean=IMAGENET_MEAN if normalize else None,
            std=IMAGENET_STD if normalize else None,
        )
        return StreamingBundle(
            splits[0],
            splits[1],
            T=T,
            n_classes=len(_class_folders(folder / "train")),
            encoding=self.params["encoding"],
            seed=seed,
            transform=transform,
            val_fraction=float(self.params["val_fraction"]),
            workers=int(self.params["workers"]),
        )
