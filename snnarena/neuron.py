"""Base classes of the neuron and surrogate-gradient plugins.

A neuron is a *functional core with explicit state* under a thin ``nn.Module`` shell:

* ``init_state(x)`` returns the state for an input current ``x`` of shape ``[B, ...]``;
* ``step(x, state) -> (spike, state)`` advances one time step (shapes ``[B, ...]``);
* ``forward_seq(x, state=None) -> (spikes, state)`` runs ``x`` of shape ``[T, B, ...]``.

The state is a ``NamedTuple`` of tensors, so a gradient method can change how time is handled
(``detach_state`` for SLTT/OTTT/TBPTT, keeping or recomputing steps for checkpointing) without
knowing the neuron's equations.

A surrogate is the spike nonlinearity ``S = Θ(x)`` with ``Θ(x) = 1 if x >= 0 else 0`` in the
forward pass and a smooth pseudo-derivative ``dS/dx ≈ σ'(x)`` in the backward pass.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from snnarena.params import Param, params_of

NeuronState = tuple[Tensor, ...]


def detach_state(state: Any) -> Any:
    """A copy of a (nested) state with every tensor detached from the graph."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(detach_state(s) for s in state))
    if isinstance(state, (list, tuple)):
        return type(state)(detach_state(s) for s in state)
    return state


class _SpikeFunction(torch.autograd.Function):
    """Heaviside forward, ``surrogate.derivative`` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, surrogate: Surrogate) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad_output * ctx.surrogate.derivative(x), None


class Surrogate:
    """A spike function: Heaviside forward (Θ(0) = 1), ``derivative(x)`` backward.

    Subclasses set ``name``, ``PARAMS`` and implement :meth:`derivative` and :meth:`primitive`,
    a smooth function whose derivative *is* the surrogate (used to test ``derivative``).
    """

    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **params: Any) -> None:
        """Validate ``params`` against ``PARAMS`` (raising ``ParamError``) and fill in defaults."""
        self.params = params_of(type(self)).resolve(params)

    def __call__(self, x: Tensor) -> Tensor:
        return _SpikeFunction.apply(x, self)

    def derivative(self, x: Tensor) -> Tensor:
        """The pseudo-derivative dS/dx used in the backward pass, as a new tensor shaped like ``x``
        (never ``x`` itself or a cached tensor: the fused backward updates it in place); ``x`` is
        left unchanged."""
        raise NotImplementedError

    def primitive(self, x: Tensor) -> Tensor:
        """A smooth step whose derivative equals :meth:`derivative`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class Neuron(nn.Module):
    """A spiking (or rate) neuron with explicit state. See the module docstring for the API."""

    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    #: ``True`` for neurons whose output is a spike train (used for spike-rate metrics).
    spiking: ClassVar[bool] = True

    def __init__(self, surrogate: Surrogate, **params: Any) -> None:
        super().__init__()
        self.surrogate = surrogate
        self.params = params_of(type(self)).resolve(params)
        #: Let :meth:`forward_seq` use the neuron's hand-written multi-step path where it has one
        #: (:mod:`snnarena.multistep`: one autograd node for all ``T`` steps, same values and
        #: gradients); ``False`` runs ``step`` under autograd (the reference). See ``set_fused``.
        self.fused = True

    @property
    def leak(self) -> float | None:
        """The membrane's per-step leak ``λ`` (``V ← λV + ...``) if it has one (traces use it)."""
        return None

    def init_state(self, x: Tensor) -> NamedTuple:
        """The initial state for an input current shaped like ``x`` ``[B, ...]``."""
        raise NotImplementedError

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One time step: input current ``x`` ``[B, ...]`` → spikes ``[B, ...]`` and new state."""
        raise NotImplementedError

    def forward_seq(self, x: Tensor, state: Any | None = None) -> tuple[Tensor, Any]:
        """Multi-step path: ``x`` ``[T, B, ...]`` → spikes ``[T, B, ...]`` and the final state."""
        if state is None:
            state = self.init_state(x[0])
        spikes = []
        for x_t in x.unbind(0):  # unbind: one backward node, not one slice per step (O(T²))
            s, state = self.step(x_t, state)
            spikes.append(s)
        return torch.stack(spikes), state

    def forward(self, x: Tensor, state: Any | None = None) -> tuple[Tensor, Any]:
        return self.forward_seq(x, state)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items()) + f", surrogate={self.surrogate}"
