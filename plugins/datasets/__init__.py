"""Built-in datasets, registered through the ``register_datasets`` hook.

CPU datasets generated or bundled locally, every build deterministic for a seed:

* sequence classification: ``digits`` (scikit-learn 8x8 digits), ``mnist1d`` (MNIST-1D),
  ``randman`` (random-manifold spike timing), ``seq_digits`` (the 8x8 digits row by row);
* per-step targets (memory benchmarks of recurrent networks): ``copy`` (SAB's copy task),
  ``adding`` (the adding problem, a regression) and ``store_recall`` (LSNN's binary store-recall);
* one graph, full batch (``target = "nodes"``: node classification, ``"links"``: link
  prediction): ``sbm`` (a stochastic block model) and ``karate`` (Zachary's karate club).

Real datasets read from local files only, failing fast with instructions when they are missing:
``mnist`` (IDX files), ``nmnist`` (N-MNIST ``.bin`` event files), and the graphs ``amazon``,
``coauthor`` and ``planetoid`` (PyTorch Geometric's raw layout, read with the ``graph`` extra).
"""

from __future__ import annotations

import snnarena
from snnarena.registry import Register

from .adding import Adding
from .copy_task import Copy
from .digits import Digits
from .karate import KarateClub
from .mnist import MNIST
from .mnist1d import MNIST1D
from .nmnist import NMNIST
from .pyg import Amazon, Coauthor, Planetoid
from .randman import Randman
from .sbm import StochasticBlockModel
from .seq_digits import SequentialDigits
from .store_recall import StoreRecall

__all__ = [
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
        NMNIST,
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
