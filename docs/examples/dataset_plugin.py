# docs/examples/dataset_plugin.py
"""A procedural temporal dataset (``sines``): tell noisy sine waves apart by their frequency.

Class ``k`` of ``n_classes`` oscillates ``f_k = f_min + k (f_max − f_min) / (n_classes − 1)`` times
per sequence. A sample is ``[T, channels]``: channel ``c`` at step ``t`` carries the current

    x[t, c] = a sin(2π f_k t / T + φ + 2π c / channels) + noise ε[t, c]

with amplitude ``a ~ U(0.5, 1.5)``, phase ``φ ~ U(0, 2π)`` and ``ε ~ N(0, 1)`` drawn per sample.
The samples are already temporal (``encoding="none"``): batches are ``[T, B, channels]``, labels
``[B]``. Everything is drawn from ``seed``, so one seed always gives the same data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

import snnarena
from snnarena.data import DataBundle, Dataset
from snnarena.params import Param, ParamError
from snnarena.registry import Register

__version__ = "1.0"


class Sines(Dataset):
    """Noisy sine waves, one frequency per class; temporal samples [T, channels]."""

    name = "sines"
    PARAMS = (
        Param("n_classes", "int", 4, "classes (frequencies)", low=2, high=64),
        Param("channels", "int", 2, "input channels, each with its own phase offset", low=1, high=256),
        Param("n_train", "int", 512, "training samples", low=1),
        Param("n_test", "int", 256, "test samples", low=1),
        Param("f_min", "float", 1.0, "cycles per sequence of class 0", low=0.0),
        Param("f_max", "float", 4.0, "cycles per sequence of the last class", low=0.0),
        Param("noise", "float", 0.1, "standard deviation of the additive noise", low=0.0),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)  # validates each parameter against PARAMS, fills in defaults
        f_min, f_max = self.params["f_min"], self.params["f_max"]
        if f_max <= f_min:  # a constraint between parameters, reported at the key to change
            raise ParamError([("f_max", f"must be greater than f_min ({f_min}), got {f_max}")])

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        """Input values per sample and step: one per channel (suite validation's memory estimate)."""
        return int(params["channels"])

    def build(self, T: int, seed: int) -> DataBundle:
        generator = torch.Generator().manual_seed(seed)
        x_train, y_train = self._draw(self.params["n_train"], T, generator)
        x_test, y_test = self._draw(self.params["n_test"], T, generator)
        return DataBundle(
            x_train, y_train, x_test, y_test, T=T, n_classes=self.params["n_classes"], encoding="none", seed=seed
        )

    def _draw(self, n: int, T: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` samples ``[n, T, channels]`` (float32) and their labels ``[n]`` (int64)."""
        p = self.params
        y = torch.randint(0, p["n_classes"], (n,), generator=generator)
        freq = p["f_min"] + y * (p["f_max"] - p["f_min"]) / (p["n_classes"] - 1)  # [n]
        amplitude = 0.5 + torch.rand(n, generator=generator)  # [n]
        phase = 2 * math.pi * torch.rand(n, generator=generator)  # [n]
        steps = torch.arange(T) / T  # [T]
        offsets = 2 * math.pi * torch.arange(p["channels"]) / p["channels"]  # [channels]
        angle = 2 * math.pi * freq[:, None, None] * steps[None, :, None] + phase[:, None, None] + offsets
        noise = p["noise"] * torch.randn(n, T, p["channels"], generator=generator)
        return (amplitude[:, None, None] * torch.sin(angle) + noise).float(), y


@snnarena.hookimpl
def register_datasets(register: Register) -> None:
    register(Sines)
