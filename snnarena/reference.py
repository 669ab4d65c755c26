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


@dataclass(frozen=True)
class ParameterRoles:
    """Which of a model's parameters (``named_parameters`` names) play which part, for the
    per-role fidelity columns.

    ``readout``: the parameters of the layer that produces the logits; ``hidden``: every other
    parameter, in ``named_parameters`` order; ``first_layer``: the first layer's weight (the
    input synapse), or ``None``. Empty roles (and ``None``) give NaN columns.
    """

    readout: tuple[str, ...]
    hidden: tuple[str, ...]
    first_layer: str | None


def _first_weight(names: list[str], model: nn.Module) -> str | None:
    """The first of ``names`` whose parameter has at least two dimensions (a weight matrix or a
    kernel, not a bias or a neuron constant)."""
    shapes = dict(model.named_parameters())
    return next((n for n in names if shapes[n].dim() >= 2), None)


def parameter_roles(model: nn.Module) -> ParameterRoles:
    """The readout, hidden and first-layer parameters of ``model``, by the model's layout:

    * a model with stages (:class:`SpikingModel`: feedforward, recurrent, graph): the readout is
      every parameter under ``model.readout``; the first layer is the first weight (≥ 2-d
      parameter) of ``stages[0]``, its input synapse;
    * a model without stages that holds an ``nn.ModuleList`` ``synapses`` (the convergent
      family): the readout is ``synapses[-1]`` (into the output layer), the first layer the first
      weight of ``synapses[0]``;
    * any other layout cannot be split: no readout, no hidden parameters, no first layer (those
      columns are NaN; the global ones are still measured).

    Hidden is always every parameter not in the readout.
    """
    names = [n for n, _ in model.named_parameters()]
    stages = getattr(model, "stages", None)
    synapses = getattr(model, "synapses", None)
    if isinstance(stages, nn.ModuleList) and len(stages) > 0:
        readout_prefix, first_prefix = "readout.", "stages.0."
    elif isinstance(synapses, nn.ModuleList) and len(synapses) > 0:
        readout_prefix, first_prefix = f"synapses.{len(synapses) - 1}.", "synapses.0."
    else:
        return ParameterRoles((), (), None)
    readout = tuple(n for n in names if n.startswith(readout_prefix))
    hidden = tuple(n for n in names if not n.startswith(readout_prefix))
    return ParameterRoles(readout, hidden, _first_weight([n for n in hidden if n.startswith(first_prefix)], model))


def _alignment(g: Tensor, r: Tensor) -> float:
    """Cosine of ``g`` with the reference ``r``: NaN where ``r = 0`` (no direction to agree with),
    0 where only ``g = 0`` (the method leaves still what BPTT moves)."""
    if r.norm() == 0:
        return math.nan
    return 0.0 if g.norm() == 0 else _cosine(g, r)


@dataclass(frozen=True)
class RoleFidelity:
    """A method's gradient vs BPTT's, per :class:`ParameterRoles`.

    Each value is the cosine of the method's gradient with BPTT's (see :func:`compare_by_role`):
    ``readout`` over the readout parameters together, ``first_layer`` on the first layer's weight,
    ``hidden_min`` the minimum over the hidden parameter tensors taken one by one.
    """

    readout: float
    hidden_min: float
    first_layer: float


def compare_by_role(grads: dict[str, Tensor], reference: dict[str, Tensor], roles: ParameterRoles) -> RoleFidelity:
    """Per-role fidelity of ``grads`` against ``reference`` (both ``{name: gradient}``).

    A cosine is taken only where BPTT's gradient ``g*`` is non-zero; where the method's ``g`` is
    zero and ``g*`` is not, it counts as 0. ``hidden_min = min_p cos(g_p, g*_p)`` over the hidden
    tensors ``p`` with ``g*_p ≠ 0``; NaN where there is none (as for an empty role).
    """

    def flat(source: dict[str, Tensor], names: tuple[str, ...]) -> Tensor:
        return torch.cat([source[n].flatten().double() for n in names])

    def together(names: tuple[str, ...]) -> float:
        return _alignment(flat(grads, names), flat(reference, names)) if names else math.nan

    hidden = [c for c in (together((n,)) for n in roles.hidden) if not math.isnan(c)]
    first = together((roles.first_layer,)) if roles.first_layer is not None else math.nan
    return RoleFidelity(together(roles.readout), min(hidden, default=math.nan), first)
