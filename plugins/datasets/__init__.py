"""Built-in datasets, registered through the ``register_datasets`` hook.

CPU datasets generated or bundled locally, every build deterministic for a seed:

* sequence classification: ``digits`` (scikit-learn 8x8 digits), ``mnist1d`` (MNIST-1D),
  ``randman`` (random-manifold spike timing), ``seq_digits`` (the 8x8 digits row by row);
* per-step targets (memory benchmarks of recurrent networks): ``copy`` (SAB's copy task),
  ``adding`` (the adding problem, a regression) and ``store_recall`` (LSNN's binary store-recall);
* event streams: ``event_shapes`` (moving shapes as tonic events, binned like the real ones);
* one graph, full batch (``target = "nodes"``: node classification, ``"links"``: link
  prediction): ``sbm`` (a stochastic block model) and ``karate`` (Zachary's karate club).

Real datasets read from local files only (``root``, else ``$SNNARENA_DATA``, else
``~/.snnarena/data``), failing fast with instructions when they are missing, never downloading:
images through torchvision (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``imagenet``),
event streams through tonic (``nmnist``, ``dvs_gesture``, ``shd``, ``cifar10_dvs``, ``poker_dvs``),
and the graphs ``amazon``, ``coauthor`` and ``planetoid`` (PyTorch Geometric's raw layout, read
with the ``graph`` extra).
"""

from __future__ import annotations

import snnarena
from snnarena.registry import Register

from .adding import Adding
from .cifar10_dvs import CIFAR10DVS
from .copy_task import Copy
from .digits import Digits
from .dvs_gesture import DVSGesture
from .generated_events import EventShapes
from .images import CIFAR10, CIFAR100, FashionMNIST, ImageNet
from .karate import KarateClub
from .mnist import MNIST
from .mnist1d import MNIST1D
from .nmnist import NMNIST
from .poker_dvs import POKERDVS
from .pyg import Amazon, Coauthor, Planetoid
from .randman import Randman
from .sbm import StochasticBlockModel
from .seq_digits import SequentialDigits
from .shd import SHD
from .store_recall import StoreRecall

__all__ = [
    "CIFAR10DVS",
    "DVSGesture",
    "EventShapes",
    "POKERDVS",
    "SHD",
    "CIFAR10",
    "CIFAR100",
    "FashionMNIST",
    "ImageNet",
    "MNIST",
    "MNIST1D",
    "NMNIST",
    "Planetoid",
    "Adding",
    "Amazon",
    "Coauthor",
    "Copy",
    "Digits",
    "KarateClub",
    "Randman",
    "SequentialDigits",
    "StochasticBlockModel",
    "StoreRecall",
]


@snnarena.hookimpl
def register_datasets(register: Register) -> None:
    for cls in (
        Digits,
        MNIST1D,
        Randman,
        MNIST,
        FashionMNIST,
        CIFAR10,
        CIFAR100,
        ImageNet,
        NMNIST,
        DVSGesture,
        SHD,
        CIFAR10DVS,
        POKERDVS,
        EventShapes,
        SequentialDigits,
        Copy,
        Adding,
        StoreRecall,
        StochasticBlockModel,
        KarateClub,
        Amazon,
        Coauthor,
        Planetoid,
    ):
        register(cls)
