"""Counting the arithmetic of any PyTorch computation at the aten level, forward and backward.

:class:`OpCounter` is a ``TorchDispatchMode``: every aten operation that runs while it is active
(including those the autograd engine runs in ``backward``) passes through it, whatever library
built the model. Each operation is charged to a *phase*: ``"backward"`` while the autograd engine
executes, otherwise the phase set by :meth:`OpCounter.phase` (``"forward"`` by default).

**Synaptic operations** (the products of ``mm``/``addmm``/``bmm``/``baddbmm``/``mv``/``addmv``/
``dot``, ``convolution`` and ``convolution_backward``), with NeuroBench's definitions:

* ``dense``: every product ``a·w`` the operation computes, zeros included (the positions of a
  convolution's zero padding are not products of the input and are not counted). For
  ``mm(A [n,k], B [k,m])`` this is ``n·k·m``; for a convolution ``Σ_out`` of the kernel taps that
  fall on the input.
* ``effective``: the products whose two factors are both nonzero — the work an event-driven
  processor that skips zeros does. For ``mm`` it is ``Σ_k nnz(A[:,k]) · nnz(B[k,:])``; for a
  convolution it is the same operation evaluated on the nonzero masks of its operands (in
  float64, so the count is exact), summed.
* an effective product is an **accumulate (AC)** when one of its operands is binary (every value
  0 or 1: a spike tensor, for which ``a·w`` is "add ``w`` if ``a = 1``") and a
  **multiply-accumulate (MAC)** otherwise. So ``effective = effective_acs + effective_macs``.

Biases are not synaptic operations (as in NeuroBench); ``addmm``'s bias addition is counted as
elementwise work.

**Elementwise operations**: one per output element of every ``pointwise``-tagged aten operation
(``add``, ``mul``, ``ge``, ``where`` ... also their in-place forms), one per input element of
``reduction``-tagged operations and of normalisation/pooling/softmax/loss kernels, and one per
element of the tensors of ``_foreach_*`` optimizer kernels. Views, copies, casts and tensor
factories are recorded in :attr:`OpCounter.calls` but cost no operations.

``ops = dense + elementwise + bias additions`` is the total arithmetic of a phase, a MAC counting
as one operation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

#: Operations that are not tagged ``pointwise``/``reduction`` but read every input element once.
_DATA_PASS_OPS: frozenset[str] = frozenset(
    {
        "_softmax",
        "_log_softmax",
        "_softmax_backward_data",
        "_log_softmax_backward_data",
        "nll_loss_forward",
        "nll_loss_backward",
        "nll_loss2d_forward",
        "nll_loss2d_backward",
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
        "avg_pool2d_backward",
        "avg_pool3d_backward",
        "max_pool2d_with_indices",
        "max_pool2d_with_indices_backward",
        "max_pool3d_with_indices",
        "native_batch_norm",
        "native_batch_norm_backward",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training",
        "_native_batch_norm_legit_functional",
        "native_layer_norm",
        "native_layer_norm_backward",
        "native_group_norm",
        "native_group_norm_backward",
        "cumsum",
        "logsumexp",
        "_adaptive_avg_pool2d",
        "_adaptive_avg_pool2d_backward",
    }
)
#: Tagged ``pointwise`` but pure data movement.
_COPY_OPS: frozenset[str] = frozenset({"clone", "copy", "copy_", "_to_copy", "lift_fresh_copy"})


@dataclass
class PassCounts:
    """The counts of one phase (see the module docstring for the definitions)."""

    dense: int = 0
    effective_macs: int = 0
    effective_acs: int = 0
    elementwise: int = 0
    bias: int = 0

    @property
    def effective(self) -> int:
        return self.effective_macs + self.effective_acs

    @property
    def ops(self) -> int:
        """All arithmetic of the phase: synaptic products (dense), elementwise work and biases."""
        return self.dense + self.elementwise + self.bias

    def as_dict(self) -> dict[str, int]:
        return {
            "dense": self.dense,
            "effective_macs": self.effective_macs,
            "effective_acs": self.effective_acs,
            "elementwise": self.elementwise,
            "bias": self.bias,
            "ops": self.ops,
        }


@dataclass
class _Synaptic:
    dense: int
    effective: int
    binary: bool


def is_binary(t: Tensor) -> bool:
    """True when every entry of ``t`` is exactly 0 or 1 (a spike tensor)."""
    if t.dtype == torch.bool:
        return True
    return bool(((t == 0) | (t == 1)).all())


def _nz(t: Tensor) -> Tensor:
    return (t != 0).to(torch.int64)


def _mm_counts(a: Tensor, b: Tensor) -> _Synaptic:
    """``a [..., n, k] @ b [..., k, m]`` (same leading batch dims)."""
    n, k = a.shape[-2], a.shape[-1]
    m = b.shape[-1]
    batch = a.numel() // max(n * k, 1) if a.dim() > 2 else 1
    effective = int((_nz(a).sum(-2) * _nz(b).sum(-1)).sum())
    return _Synaptic(batch * n * k * m, effective, is_binary(a) or is_binary(b))


def _mv_counts(a: Tensor, v: Tensor) -> _Synaptic:
    """``a [n, k] @ v [k]`` (and ``dot`` as ``n = 1``)."""
    a2 = a if a.dim() == 2 else a.unsqueeze(0)
    effective = int((_nz(a2).sum(0) * _nz(v)).sum())
    return _Synaptic(a2.numel(), effective, is_binary(a) or is_binary(v))


def _mask(t: Tensor, ones: bool) -> Tensor:
    return torch.ones_like(t, dtype=torch.float64) if ones else (t != 0).to(torch.float64)


def _conv_counts(x: Tensor, w: Tensor, rest: tuple[Any, ...]) -> _Synaptic:
    """``convolution(x, w, bias, stride, padding, dilation, transposed, output_padding, groups)``
    evaluated on the operands' masks (ones for ``dense``)."""
    dense = float(aten.convolution.default(_mask(x, True), _mask(w, True), None, *rest).sum())
    effective = float(aten.convolution.default(_mask(x, False), _mask(w, False), None, *rest).sum())
    return _Synaptic(round(dense), round(effective), is_binary(x) or is_binary(w))


def _conv_backward_counts(args: tuple[Any, ...]) -> list[_Synaptic]:
    """``convolution_backward(grad_out, x, w, bias_sizes, stride, padding, dilation, transposed,
    output_padding, groups, output_mask)``: the input gradient pairs ``grad_out`` with ``w``,
    the weight gradient pairs ``grad_out`` with ``x``; each is counted on the operands' masks."""
    g, x, w = args[0], args[1], args[2]
    geometry = tuple(args[4:10])
    mask = list(args[10])
    out: list[_Synaptic] = []
    for index, partner in ((0, w), (1, x)):
        if not mask[index]:
            continue
        only = [i == index for i in range(3)]
        counts = []
        for ones in (True, False):
            grads = aten.convolution_backward.default(
                _mask(g, ones), _mask(x, ones), _mask(w, ones), None, *geometry, only
            )
            counts.append(round(float(grads[index].sum())))
        out.append(_Synaptic(counts[0], counts[1], is_binary(g) or is_binary(partner)))
    return out


def _numel(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel()
    if isinstance(value, (list, tuple)):
        return sum(_numel(v) for v in value)
    return 0


def _largest_input(args: tuple[Any, ...]) -> int:
    sizes = [a.numel() for a in args if isinstance(a, Tensor)]
    return max(sizes, default=0)


class OpCounter(TorchDispatchMode):
    """Counts synaptic and elementwise operations per phase while active (``with OpCounter():``).

    ``counts[phase]`` holds a :class:`PassCounts`; ``calls[(phase, op)]`` the number of calls of
    each aten operation (``op`` like ``"aten.mm"``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, PassCounts] = defaultdict(PassCounts)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self._phase = "forward"

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge the operations run outside the autograd engine inside this block to ``name``."""
        previous, self._phase = self._phase, name
        try:
            yield
        finally:
            self._phase = previous

    def current_phase(self) -> str:
        return "backward" if torch._C._current_graph_task_id() != -1 else self._phase

    def __getitem__(self, phase: str) -> PassCounts:
        return self.counts[phase]

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        phase = self.current_phase()
        name = func._overloadpacket.__name__
        self.calls[(phase, f"aten.{name}")] += 1
        self._charge(self.counts[phase], func, name, args, kwargs, out)
        return out

    def _charge(
        self, counts: PassCounts, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
    ) -> None:
        synaptic: list[_Synaptic] = []
        if name in ("mm", "bmm"):
            synaptic.append(_mm_counts(args[0], args[1]))
        elif name in ("addmm", "baddbmm"):
            synaptic.append(_mm_counts(args[1], args[2]))
            counts.bias += _numel(out)
        elif name == "mv":
            synaptic.append(_mv_counts(args[0], args[1]))
        elif name == "addmv":
            synaptic.append(_mv_counts(args[1], args[2]))
            counts.bias += _numel(out)
        elif name == "dot":
            synaptic.append(_mv_counts(args[0], args[1]))
        elif name == "convolution":
            synaptic.append(_conv_counts(args[0], args[1], tuple(args[3:])))
            if args[2] is not None:
                counts.bias += _numel(out)
        elif name == "convolution_backward":
            synaptic.extend(_conv_backward_counts(tuple(args)))
            if args[10][2]:
                counts.elementwise += args[0].numel()  # the bias gradient sums grad_out
        elif name.startswith("_foreach_"):
            counts.elementwise += _numel(args[0])
        elif name in _COPY_OPS:
            pass
        elif torch.Tag.pointwise in func.tags:
            counts.elementwise += _numel(out[0] if isinstance(out, (tuple, list)) else out)
        elif torch.Tag.reduction in func.tags or name in _DATA_PASS_OPS:
            counts.elementwise += _largest_input(args)
        for s in synaptic:
            counts.dense += s.dense
            if s.binary:
                counts.effective_acs += s.effective
            else:
                counts.effective_macs += s.effective

    def summary(self) -> dict[str, dict[str, int]]:
        """``{phase: counts}`` for the phases that ran."""
        return {p: c.as_dict() for p, c in self.counts.items()}
