# docs/examples/per_step_dataset_plugin.py
"""A per-step classification dataset (``delayed_echo``): echo each input bit ``delay`` steps later.

A sample is a sequence of random bits ``b[0 .. T−1]`` (``b[t] ~ Bernoulli(½)``), shown one-hot:
``x[t] = (1 − b[t], b[t])``, so either bit drives an input channel. The target at step ``t`` is the
bit ``delay`` steps earlier, scored from step ``delay`` on:

    y[t] = b[t − delay]   for t ≥ delay,      y[t] = −100 (IGNORE_INDEX, not scored)   for t < delay

Task ``per_step_classification``: stored targets are ``[N, T]`` (int64), batches ``[T, B]``; two
classes; the score is the accuracy over the scored steps (chance: ½). A model must remember the
last ``delay`` bits, so ``T > delay``. Everything is drawn from ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

import snnarena
from snnarena.data import DataBundle, Dataset
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import IGNORE_INDEX

__version__ = "1.0"


def too_short(delay: int, T: int) -> str | None:
    """Why ``T`` steps leave no step to score with this ``delay``, or ``None``."""
    if T <= delay:
        return f"delayed_echo: T={T} leaves no step to score with delay={delay}; use T > {delay} or a smaller delay"
    return None


class DelayedEcho(Dataset):
    """Random bits in; at each step from ``delay`` on, output the bit seen ``delay`` steps earlier."""

    name = "delayed_echo"
    task = "per_step_classification"  # known before building: suite validation checks train.loss with it
    PARAMS = (
        Param("delay", "int", 2, "steps between an input bit and its echo", low=0, high=10_000),
        Param("n_train", "int", 1024, "training sequences (validation is carved from them)", low=2),
        Param("n_test", "int", 256, "test sequences", low=1),
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return 2  # one-hot bit per step

    @classmethod
    def check_T(cls, params: Mapping[str, Any], T: int) -> str | None:
        return too_short(int(params["delay"]), T)

    def build(self, T: int, seed: int) -> DataBundle:
        reason = too_short(self.params["delay"], T)
        if reason:
            raise ValueError(reason)
        generator = torch.Generator().manual_seed(seed)
        x_train, y_train = self._draw(self.params["n_train"], T, generator)
        x_test, y_test = self._draw(self.params["n_test"], T, generator)
        return DataBundle(
            x_train, y_train, x_test, y_test, T=T, n_classes=2, encoding="none", seed=seed, task=self.task
        )

    def _draw(self, n: int, T: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` samples ``[n, T, 2]`` (float32, one-hot bits) and their targets ``[n, T]`` (int64)."""
        delay = self.params["delay"]
        bits = torch.randint(0, 2, (n, T), generator=generator)  # [n, T]
        x = torch.nn.functional.one_hot(bits, 2).float()  # [n, T, 2]
        y = torch.full((n, T), IGNORE_INDEX, dtype=torch.long)
        y[:, delay:] = bits[:, : T - delay]  # y[t] = b[t − delay] from step delay on
        return x, y


@snnarena.hookimpl
def register_datasets(register: Register) -> None:
    register(DelayedEcho)
