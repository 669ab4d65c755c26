"""Exact BPTT, the reference every other method is compared with, and gradient fidelity.

BPTT unrolls the model over all ``T`` steps (``model.forward_seq``), evaluates the cell's loss
on the logits ``[T, B, C]`` and back-propagates once through the whole graph, with the
surrogate derivative in place of Θ'. The ``bptt`` plugin exposes this as a method; the host uses
it directly to measure how close another method's gradient is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.model import SpikingModel


def bptt_accumulate(model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock) -> float:
    """Add the exact BPTT gradient of ``loss`` on batch ``(x [T,B,...], y [B])`` to ``p.grad``."""
    with clock.phase("forward"):
        value = loss.full(model.forward_seq(x).logits, y)
    with clock.phase("backward"):
        value.backward()
    return float(value.detach())


@dataclass(frozen=True)
class Fidelity:
    """How a method's gradient ``g`` compares with BPTT's ``g*`` on the same batch and weights.

    ``cosine = <g, g*> / (|g| |g*|)`` over all parameters together, ``norm_ratio = |g| / |g*|``,
    ``sign_agreement`` = share of entries with equal sign (zeros excluded), and ``per_layer`` the
    cosine per parameter tensor (NaN where either gradient is zero).
    """

    cosine: float
    norm_ratio: float
    sign_agreement: float
    per_layer: dict[str, float]


def _cosine(a: Tensor, b: Tensor) -> float:
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return math.nan
    return float(torch.dot(a, b) / (na * nb))


def collect_gradients(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of every parameter's gradient (zeros where it has none)."""
    return {
        name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for name, p in model.named_parameters()
    }


def compare_gradients(grads: dict[str, Tensor], reference: dict[str, Tensor]) -> Fidelity:
    """Compare two gradient dictionaries over the parameters of ``reference``."""
    names = list(reference)
    g = torch.cat([grads[n].flatten().double() for n in names])
    r = torch.cat([reference[n].flatten().double() for n in names])
    both = (g != 0) & (r != 0)
    agree = float((torch.sign(g[both]) == torch.sign(r[both])).double().mean()) if both.any() else math.nan
    rn = r.norm()
    return Fidelity(
        cosine=_cosine(g, r),
        norm_ratio=float(g.norm() / rn) if rn > 0 else math.nan,
        sign_agreement=agree,
        per_layer={n: _cosine(grads[n].flatten().double(), reference[n].flatten().double()) for n in names},
    )
