"""``mnist``: MNIST handwritten digits read by ``torchvision.datasets.MNIST`` from local files.

The four uncompressed IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``) are read from ``<root>/MNIST/raw/``
(torchvision's layout; ``root`` defaults to :func:`snnarena.data.data_root`) and never
downloaded. Pixels are scaled to ``[0, 1]``; samples are ``[784]`` (``flatten=true``) or
``[1, 28, 28]``, batches ``[T, B, 784]`` or ``[T, B, 1, 28, 28]``, coded by ``direct``, ``rate``
or ``static``. The official 60000/10000 split is kept; ``max_train``/``max_test`` take a subset
drawn from the seed, and ``val_fraction`` of the (subset of the) training split is held out for
validation, stratified by class. ``stream = true`` reads the samples through data loaders
(:class:`snnarena.streaming.StreamingBundle`) instead of holding them in the bundle.
"""

from __future__ import annotations

import torchvision

from .images import IdxImages


class MNIST(IdxImages):
    """MNIST 28x28 digits from local IDX files (60000/10000 split), coded over T steps."""

    name = "mnist"
    torchvision_class = torchvision.datasets.MNIST
    source = torchvision.datasets.MNIST.mirrors[0]
    PARAMS = IdxImages.params_for("MNIST")
