"""Built-in datasets, registered through the ``register_datasets`` hook.

CPU datasets generated or bundled locally: ``digits`` (scikit-learn 8x8 digits), ``mnist1d``
(MNIST-1D), ``randman`` (random-manifold spike timing), ``seq_digits`` (the 8x8 digits row by
row). Real datasets read from local files only, failing fast with instructions when they are
missing: ``mnist`` (IDX files) and ``nmnist`` (N-MNIST ``.bin`` event files). Every build is deterministic for a seed.
"""

from __future__ import annotations

import snnarena
from snnarena.registry import Register

from .digits import Digits
from .mnist import MNIST
from .mnist1d import MNIST1D
from .nmnist import NMNIST
from .randman import Randman
from .seq_digits import SequentialDigits

__all__ = ["MNIST", "MNIST1D", "NMNIST", "Digits", "Randman", "SequentialDigits"]


@snnarena.hookimpl
def register_datasets(register: Register) -> None:
    for cls in (Digits, MNIST1D, Randman, MNIST, NMNIST, SequentialDigits):
        register(cls)
