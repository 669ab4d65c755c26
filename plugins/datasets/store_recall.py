"""``store_recall``: binary store-recall (Bellec et al., LSNN, NeurIPS 2018), reimplemented.

A sample is a sequence of ``n = T / char_steps`` *characters* of ``char_steps`` steps each. Every
character shows a random bit; one character (``s``) also shows the *store* cue, a later one
(``r = s + d``) the *recall* cue. The delay ``d`` (in characters) is drawn uniformly from
``min_delay .. min(max_delay, n − 1)`` and then ``s`` uniformly from ``0 .. n − 1 − d``. The bits
shown without a store cue (the recall character's included) are distractors.

Inputs: four channels of ``population`` neurons each, in this order: *bit 0*, *bit 1*, *store*,
*recall* (``[T, 4·population]``, ``uint8``). A channel is active during the characters it marks
(bit ``b`` of each character activates channel ``b``). ``coding="direct"``: an active channel's
neurons are 1 at each of its steps; ``coding="spikes"``: each fires with probability ``rate`` per
step (Bernoulli spikes, drawn once from the seed), silent otherwise.

Task ``per_step_classification``: targets ``[T]`` per sample (batches ``[T, B]``), 2 classes: the
stored bit on each step of the recall character, ``−100`` (cross-entropy's ``ignore_index``)
elsewhere. Chance level is 50 %. ``T`` must be a multiple of ``char_steps`` with at least
``min_delay + 1`` characters. Train and test samples come from two independent generators of the
seed; ``val_fraction`` of the training samples is held out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from snnarena.data import DataBundle, Dataset
from snnarena.params import Param
from snnarena.task import IGNORE_INDEX

from ._common import N_TEST_SEQUENCES, N_TRAIN_SEQUENCES, STREAM_DATA, VAL_FRACTION, rng
from .seq_digits import SequenceLengthError

#: Input channels, each ``population`` neurons wide, in this order.
CHANNELS = ("bit0", "bit1", "store", "recall")
BIT0, BIT1, STORE, RECALL = range(len(CHANNELS))


def check_T(char_steps: int, min_delay: int, max_delay: int | None, T: int) -> str | None:
    """Why store-recall cannot be posed in ``T`` steps of characters of ``char_steps``, or ``None``."""
    if max_delay is not None and max_delay < min_delay:
        return f"store_recall: max_delay={max_delay} is below min_delay={min_delay}; raise max_delay or lower min_delay"
    if T % char_steps or T // char_steps < min_delay + 1:
        shortest = char_steps * (min_delay + 1)
        return (
            f"store_recall: T={T} is not a multiple of char_steps={char_steps} with at least min_delay + 1 = "
            f"{min_delay + 1} characters; use T = {shortest}, {shortest + char_steps}, ..."
        )
    return None


def draw_cues(
    n: int, n_chars: int, min_delay: int, max_delay: int | None, gen: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Store and recall characters ``(s, r)`` of ``n`` samples (``int64 [n]`` each), ``r − s`` uniform
    in ``min_delay .. min(max_delay, n_chars − 1)`` and ``s`` uniform given the delay."""
    longest = n_chars - 1 if max_delay is None else min(max_delay, n_chars - 1)
    delay = gen.integers(min_delay, longest + 1, size=n)
    store = np.floor(gen.random(n) * (n_chars - delay)).astype(np.int64)
    return store, store + delay


def make_store_recall(
    n: int,
    n_chars: int,
    char_steps: int,
    cues: tuple[np.ndarray, np.ndarray],
    gen: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Channel activity ``[n, T, 4]`` (``uint8``, one column per :data:`CHANNELS`) and targets ``[n, T]``
    (``int64``) of ``n`` samples with store/recall characters ``cues``; ``T = n_chars · char_steps``."""
    store, recall = cues
    rows = np.arange(n)
    bits = gen.integers(0, 2, size=(n, n_chars))
    chars = np.zeros((n, n_chars, len(CHANNELS)), dtype=np.uint8)
    chars[rows[:, None], np.arange(n_chars)[None, :], bits] = 1  # channel BIT0 + bit
    chars[rows, store, STORE] = 1
    chars[rows, recall, RECALL] = 1
    targets = np.full((n, n_chars), IGNORE_INDEX, dtype=np.int64)
    targets[rows, recall] = bits[rows, store]
    return np.repeat(chars, char_steps, axis=1), np.repeat(targets, char_steps, axis=1)


def encode(active: np.ndarray, population: int, rate: float | None, gen: np.random.Generator) -> np.ndarray:
    """``[n, T, channels]`` activity → ``[n, T, channels · population]`` inputs (``uint8``): each
    channel's neurons copy it (``rate`` ``None``) or spike with probability ``rate`` while it is on."""
    wide = np.repeat(active, population, axis=2)
    if rate is None:
        return wide
    spikes = gen.random(wide.shape) < rate
    return (wide & spikes).astype(np.uint8)


class StoreRecall(Dataset):
    """LSNN's binary store-recall: recall the bit shown with the store cue when the recall cue comes."""

    name = "store_recall"
    task = "per_step_classification"
    PARAMS = (
        Param("char_steps", "int", 10, "steps per character (T must be a multiple of it)", low=1, high=100_000),
        Param("min_delay", "int", 1, "shortest store-to-recall delay, in characters", low=1, high=100_000),
        Param(
            "max_delay",
            "int",
            None,
            "longest store-to-recall delay, in characters (null: up to the last character)",
            low=1,
            high=100_000,
            nullable=True,
        ),
        Param("coding", "str", "direct", "input coding of an active channel", choices=("direct", "spikes")),
        Param("population", "int", 1, "input neurons per channel (bit 0, bit 1, store, recall)", low=1, high=10_000),
        Param(
            "rate", "float", 0.2, "spike probability per step of an active neuron (coding='spikes')", low=0.0, high=1.0
        ),
        N_TRAIN_SEQUENCES,
        N_TEST_SEQUENCES,
        VAL_FRACTION,
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return len(CHANNELS) * int(params["population"])

    @classmethod
    def check_T(cls, params: Mapping[str, Any], T: int) -> str | None:
        max_delay = None if params["max_delay"] is None else int(params["max_delay"])
        return check_T(int(params["char_steps"]), int(params["min_delay"]), max_delay, T)

    def _generate(self, n: int, T: int, gen: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        char_steps = int(p["char_steps"])
        max_delay = None if p["max_delay"] is None else int(p["max_delay"])
        cues = draw_cues(n, T // char_steps, int(p["min_delay"]), max_delay, gen)
        active, y = make_store_recall(n, T // char_steps, char_steps, cues, gen)
        rate = float(p["rate"]) if p["coding"] == "spikes" else None
        return torch.from_numpy(encode(active, int(p["population"]), rate, gen)), torch.from_numpy(y)

    def build(self, T: int, seed: int) -> DataBundle:
        reason = self.check_T(self.params, T)
        if reason:
            raise SequenceLengthError(reason)
        train_gen, test_gen = rng(seed, STREAM_DATA).spawn(2)
        x_train, y_train = self._generate(int(self.params["n_train"]), T, train_gen)
        x_test, y_test = self._generate(int(self.params["n_test"]), T, test_gen)
        return DataBundle(
            x_train,
            y_train,
            x_test,
            y_test,
            T=T,
            n_classes=2,
            encoding="none",
            seed=seed,
            val_fraction=float(self.params["val_fraction"]),
            task=self.task,
        )
