r"""``eprop``: eligibility propagation (Bellec et al., Nat. Commun. 11:3625, 2020), online in time.

Trains ``rsnn`` models with **one** recurrent layer of ``lif``, ``if`` or ``alif`` neurons and a
linear readout ``o[t] = W_out S[t] + b_out``. The layer's ``N`` neurons see the presynaptic vector
``p[t] = (x[t], 1, S[t−1])`` ``[B, P]`` (input flattened, a constant for the biases, the layer's
own previous spikes; ``S[−1] = 0``), so all its weights form one matrix ``θ = (W | b | R)``
``[N, P]`` with ``I[t] = θ p[t]``. With the per-step loss ``L = Σ_t L_t`` (``L_t`` =
``loss.step(o[t], y, T, t)``) e-prop's gradient is

    ∂L/∂θ_ji ≈ Σ_t L_j[t] e_ji[t],    L_j[t] = Σ_k B_jk ∂L_t/∂o_k[t]

where ``L_j[t]`` is the learning signal — ``B = W_outᵀ`` (``feedback = "symmetric"``, the
current readout weights) or a fixed random ``B`` (``"random"``) — and ``e_ji[t] = dS_j[t]/dθ_ji``
is the eligibility trace, the derivative along neuron ``j``'s own hidden state, computed forward
in time. With ``H`` the membrane before firing, ``A`` the threshold, ``λ = 1 − 1/τ`` (``1`` for
``if``), ``c = 1/τ`` with ``decay_input`` (else ``1``), ``ψ_j[t] = surrogate'(H_j[t] − A_j[t])``
(``0`` while an ``alif`` neuron is refractory) and ``ε[−1] = 0``::

    ε^H[t] = λ ε^V[t−1] + c p[t]                    dH[t]/dθ
    ε^u[t] = ε^H[t] − β_j ε^b[t−1]                  d(H − A)[t]/dθ   (A[t] = V_th + β_j b[t−1])
    e[t]   = ψ[t] ε^u[t]
    ε^V[t] = ε^H[t]                                 soft reset (lif, if)
           = (1 − S[t]) ε^H[t]                      hard reset (lif, if)
           = ε^H[t] − β_j S[t] ε^b[t−1]             alif (reset by the adaptive threshold A[t])
    ε^b[t] = ρ ε^b[t−1] + (1 − ρ) m_j ψ[t] ε^u[t]   alif only (m_j = 1 for the adapting neurons)

This is Bellec et al.'s ``ε = λε + p``, ``e = ψε`` for LIF and their two-component ALIF vector
(``ε^a`` is our ``ε^b / (1 − ρ)``: their ``b`` has no ``(1 − ρ)`` factor). **The reset does not
enter the traces**: the spike in the reset term is held constant (detach-reset semantics, as
Bellec et al., whatever the neuron's ``detach_reset`` says); what remains of the reset is its
``1 − S`` factor (hard reset) and, for ``alif``, the adaptive threshold ``A[t]`` it subtracts. With
a soft-reset ``lif``/``if`` layer ``ε^V`` is the same for every neuron ``j``: one presynaptic trace
``[B, P]``; otherwise the traces are per synapse, ``[B, N, P]`` (and ``ε^b`` for ``alif``).

Exactness: with symmetric feedback, ``L_j[t] = ∂L_t/∂S_j[t]`` and the gradient equals autograd
BPTT of the same network with ``detach_reset = true`` and ``S[t−1]`` detached in the recurrent
input (``state._replace(output=state.output.detach())``) — e-prop's factorisation of BPTT; the
dropped part is the spikes' influence on later steps through the recurrent weights. The readout
gets its exact gradient at every step (it is memoryless). The biases take the constant column.
The layer's gradients reach ``.grad`` through autograd's accumulation
(``torch.autograd.backward(params, grads)``), so gradient hooks (the host's check that every
parameter is trained, even when ``update = "step"`` clears ``.grad``) see them.

Nothing is kept across steps but the state and the traces (no graph): saved memory is one step's
readout graph plus the traces (``O(B·P)`` or ``O(B·N·P)``, reported as held bytes), constant in
``T`` (memory class ``O(1)``). ``update = "batch"`` sums the ``T`` per-step gradients and steps the
optimizer once per batch; ``"step"`` steps it after every step (online e-prop: later steps run with
the updated weights, the traces are kept). Random feedback ``B`` ``[N, C]`` is drawn once, in
:meth:`EProp.prepare`, as a standard normal matrix rescaled to the Frobenius norm of ``W_out``:
from ``torch.Generator().manual_seed(feedback_seed)``, or, with ``feedback_seed = null``, from
torch's global RNG (so the cell's seed fixes it). It is a buffer of the prepared module
(:class:`RandomFeedback`): saved with the weights and moved with ``.to()``.

Skipped, with the reason: models other than a one-layer ``RecurrentStage`` with ``Linear`` input
and recurrent synapses and a ``Linear`` readout (``lstm``, ``mlp``, ``convnet``, deeper ``rsnn``:
e-prop defines no learning signal for a layer below another), neurons other than ``lif``, ``if``
and ``alif`` (exactly these classes: a subclass may change the equations), and the ``rate`` loss
(it does not split over steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

import torch
from torch import Tensor, nn

import snnarena
from snnarena.claims import Check, Claim, Conditions
from snnarena.data import DataInfo
from snnarena.errors import ConfigurationError
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock, report_held_bytes
from snnarena.method import GradientMethod, Update
from snnarena.model import RecurrentStage, RecurrentState, SpikingModel
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import TASK_KINDS
from snnarena_plugins.neurons import AdaptiveLIF, IntegrateAndFire, LeakyIntegrateAndFire

TracedNeuron: TypeAlias = IntegrateAndFire | AdaptiveLIF
#: The neuron classes whose equations the traces follow (``if``, ``lif``, ``alif``).
TRACED_NEURONS: tuple[type[TracedNeuron], ...] = (IntegrateAndFire, LeakyIntegrateAndFire, AdaptiveLIF)


# -- the neuron's side: coefficients of the trace recursion and ψ ---------------------------------
@dataclass(frozen=True)
class TraceCoefficients:
    """The constants of a layer's eligibility recursion (module docstring).

    ``leak`` λ, ``input_scale`` c, ``hard_reset``; for ``alif`` also ``beta`` β_j ``[N]``,
    ``rho`` ρ and ``adapt`` ``(1 − ρ) m_j`` ``[N]`` (``None`` for ``lif``/``if``).
    """

    leak: float
    input_scale: float
    hard_reset: bool = False
    beta: Tensor | None = None
    rho: float = 0.0
    adapt: Tensor | None = None


def trace_coefficients(neuron: TracedNeuron, like: Tensor) -> TraceCoefficients:
    """The coefficients for a layer of ``neuron`` whose currents look like ``like`` ``[B, N]``."""
    if isinstance(neuron, AdaptiveLIF):
        n = like.shape[-1]
        mask = (torch.arange(n, device=like.device) < neuron.n_adaptive(n)).to(like.dtype)
        return TraceCoefficients(
            leak=neuron.leak,
            input_scale=1.0 / neuron.tau if neuron.decay_input else 1.0,
            beta=neuron.betas(like),
            rho=neuron.rho,
            adapt=(1.0 - neuron.rho) * mask,
        )
    scale = 1.0 / neuron.tau if isinstance(neuron, LeakyIntegrateAndFire) and neuron.decay_input else 1.0
    return TraceCoefficients(leak=neuron.leak, input_scale=scale, hard_reset=neuron.reset_mode == "hard")


def pseudo_derivative(neuron: TracedNeuron, current: Tensor, state: Any) -> Tensor:
    """``ψ[t]`` ``[B, N]``: the surrogate's derivative at ``H[t] − A[t]`` for the current ``I[t]``
    and the neuron state of step ``t − 1``; ``0`` where an ``alif`` neuron is refractory."""
    h = neuron.charge(current, state.v)
    if isinstance(neuron, AdaptiveLIF):
        psi = neuron.surrogate.derivative(h - (neuron.v_threshold + neuron.beta * state.b))
        return psi * (state.refractory == 0).to(psi.dtype) if neuron.n_refractory > 0 else psi
    return neuron.surrogate.derivative(h - neuron.v_threshold)


# -- the traces --------------------------------------------------------------------------------
class Eligibility(NamedTuple):
    """The eligibility traces of one step, ``e[t] = ψ[t] ε^u[t]``, kept factorised:
    ``psi`` ``[B, N]`` and ``vector`` ``ε^u`` ``[B, 1, P]`` (shared by every neuron) or ``[B, N, P]``."""

    psi: Tensor
    vector: Tensor

    def full(self) -> Tensor:
        """``e_ji[t]`` per sample, ``[B, N, P]``."""
        return self.psi.unsqueeze(-1) * self.vector

    def weight_gradient(self, signal: Tensor) -> Tensor:
        """``Σ_b L_bj e_bji`` ``[N, P]`` for the learning signal ``L`` ``[B, N]``."""
        weighted = signal * self.psi
        if self.vector.shape[1] == 1:
            return weighted.T @ self.vector[:, 0]
        return torch.einsum("bn,bnp->np", weighted, self.vector)


class EligibilityTraces:
    """The eligibility vectors ``ε^V`` (and ``ε^b`` for ``alif``) of one layer over a sequence.

    Start with :meth:`zeros`; :meth:`step` advances them by one time step (no autograd).
    """

    def __init__(self, coefficients: TraceCoefficients, v: Tensor, b: Tensor | None) -> None:
        self.k = coefficients
        self.v = v
        self.b = b

    @classmethod
    def zeros(cls, neuron: TracedNeuron, spikes: Tensor, p: int) -> EligibilityTraces:
        """``ε[−1] = 0`` for a layer of ``neuron`` with spikes ``[B, N]`` and ``P`` presynaptic
        columns: ``ε^V`` ``[B, 1, P]`` (it widens to ``[B, N, P]`` when it must), ``ε^b`` ``[B, N, P]``."""
        coefficients = trace_coefficients(neuron, spikes)
        batch, n = spikes.shape
        v = spikes.new_zeros(batch, 1, p)
        b = spikes.new_zeros(batch, n, p) if coefficients.beta is not None else None
        return cls(coefficients, v, b)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.v, self.b) if t is not None)

    def step(self, presynaptic: Tensor, psi: Tensor, spikes: Tensor) -> Eligibility:
        """Advance by step ``t`` given ``p[t]`` ``[B, P]``, ``ψ[t]`` and ``S[t]`` ``[B, N]``."""
        k = self.k
        h = k.leak * self.v + k.input_scale * presynaptic.unsqueeze(1)
        if k.beta is None or k.adapt is None or self.b is None:
            u = h
            self.v = (1.0 - spikes).unsqueeze(-1) * h if k.hard_reset else h
        else:
            beta = k.beta[:, None]
            u = h - beta * self.b
            self.v = h - beta * spikes.unsqueeze(-1) * self.b
            self.b = k.rho * self.b + k.adapt[:, None] * psi.unsqueeze(-1) * u
        return Eligibility(psi, u)


# -- the model's side: the layer e-prop trains ----------------------------------------------------
def _input_linear(synapse: nn.Module) -> nn.Linear | None:
    """The ``Linear`` of an rsnn input synapse (``Linear`` or ``Sequential(Flatten, Linear)``)."""
    if isinstance(synapse, nn.Linear):
        return synapse
    if (
        isinstance(synapse, nn.Sequential)
        and len(synapse) == 2
        and isinstance(synapse[0], nn.Flatten)
        and isinstance(synapse[1], nn.Linear)
    ):
        return synapse[1]
    return None


def unsupported(model: SpikingModel) -> str | None:
    """Why e-prop cannot train ``model`` (beyond family, task and loss form), or ``None``."""
    what = f"{model.name!r}" if model.name else type(model).__name__
    if len(model.stages) != 1:
        return (
            f"eprop trains models with one recurrent layer (e-prop defines no learning signal for a layer "
            f"below another); {what} has {len(model.stages)} stages: use hidden = [N]"
        )
    stage = model.stages[0]
    if not isinstance(stage, RecurrentStage):
        return f"eprop needs a RecurrentStage; {what} stage 0 is {type(stage).__name__}"
    neuron = stage.neuron
    if type(neuron) not in TRACED_NEURONS:  # exact classes: a subclass may change the equations
        name = getattr(neuron, "name", "") or type(neuron).__name__
        return f"eprop computes eligibility traces for lif, if and alif neurons; {what} stage 0 has {name}"
    if _input_linear(stage.synapse) is None:
        return f"eprop needs a Linear input synapse; {what} stage 0 has {type(stage.synapse).__name__}"
    if stage.recurrent is not None and not isinstance(stage.recurrent, nn.Linear):
        return f"eprop needs a Linear recurrent synapse; {what} stage 0 has {type(stage.recurrent).__name__}"
    if not isinstance(model.readout, nn.Linear):
        return (
            f"eprop needs a Linear readout (its learning signal uses W_out); {what} has {type(model.readout).__name__}"
        )
    return None


class TrainedLayer:
    """The recurrent layer of a supported model, driven one step at a time without autograd.

    Columns of ``p[t]`` (and of the gradient ``[N, P]``): the ``N_in`` inputs, one constant ``1``
    if any synapse has a bias, then the ``N`` previous spikes if the layer is recurrent.
    """

    def __init__(self, model: SpikingModel) -> None:
        reason = unsupported(model)
        if reason is not None:
            raise ConfigurationError(reason)
        stage, linear = model.stages[0], _input_linear(model.stages[0].synapse)
        # narrowing what unsupported() checked
        assert isinstance(stage, RecurrentStage) and isinstance(stage.neuron, IntegrateAndFire | AdaptiveLIF)
        assert linear is not None and (stage.recurrent is None or isinstance(stage.recurrent, nn.Linear))
        self.stage = stage
        self.neuron: TracedNeuron = stage.neuron
        self.input = linear
        self.recurrent: nn.Linear | None = stage.recurrent
        self.biases = [m.bias for m in (self.input, self.recurrent) if m is not None and m.bias is not None]
        self.n_in = self.input.in_features

    def presynaptic(self, x_t: Tensor, state: RecurrentState | None) -> Tensor:
        """``p[t]`` ``[B, P]`` for the input ``x[t]`` ``[B, ...]`` and the state of step ``t − 1``."""
        parts = [x_t.flatten(1)]
        if self.biases:
            parts.append(x_t.new_ones(x_t.shape[0], 1))
        if self.recurrent is not None:
            n = self.recurrent.in_features
            parts.append(x_t.new_zeros(x_t.shape[0], n) if state is None else state.output)
        return torch.cat(parts, dim=1)

    def step(self, x_t: Tensor, state: RecurrentState | None) -> tuple[Tensor, RecurrentState, Tensor]:
        """One step: spikes ``S[t]`` ``[B, N]``, the new state and ``ψ[t]`` ``[B, N]``."""
        current = self.stage.total_current(self.stage.synapse(x_t), state)
        neuron_state: Any = self.neuron.init_state(current) if state is None else state.neuron
        psi = pseudo_derivative(self.neuron, current, neuron_state)
        spikes, neuron_state = self.neuron.step(current, neuron_state)
        return spikes, RecurrentState(neuron_state, spikes), psi

    def add_gradient(self, grad: Tensor) -> None:
        """Add ``grad`` ``[N, P]`` to the ``.grad`` of ``W``, the biases and ``R``, through autograd's
        accumulation (so gradient hooks, such as the host's check that every parameter is trained,
        see it)."""
        params, grads = [self.input.weight], [grad[:, : self.n_in]]
        column = self.n_in
        if self.biases:
            params += self.biases
            grads += [grad[:, column]] * len(self.biases)
            column += 1
        if self.recurrent is not None:
            params.append(self.recurrent.weight)
            grads.append(grad[:, column:])
        torch.autograd.backward(params, grads)


class _HeldBytes:
    """Tells an active :class:`~snnarena.measure.SavedTensorMeter` how many bytes the traces take
    (:meth:`set`); releases them all on exit."""

    def __init__(self) -> None:
        self.nbytes = 0

    def set(self, nbytes: int) -> None:
        report_held_bytes(nbytes - self.nbytes)
        self.nbytes = nbytes

    def __enter__(self) -> _HeldBytes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.set(0)


# -- random feedback ------------------------------------------------------------------------------
class RandomFeedback(nn.Module):
    """The model with e-prop's fixed random feedback ``B`` ``[N, C]`` as a buffer (``feedback``).

    Shares the model's parameters; ``forward`` is the model's.
    """

    feedback: Tensor

    def __init__(self, model: SpikingModel, feedback: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("feedback", feedback)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def draw_feedback(readout: nn.Linear, seed: int | None) -> Tensor:
    """A standard normal ``[N, C]`` matrix with the Frobenius norm of ``W_out`` ``[C, N]``, from a
    generator seeded with ``seed`` (``None``: torch's global RNG); ``W_out``'s dtype and device."""
    weight = readout.weight.detach()
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    b = torch.randn(weight.shape[1], weight.shape[0], generator=generator, dtype=torch.float64)
    b = b * (float(weight.norm()) / float(b.norm()))
    return b.to(dtype=weight.dtype, device=weight.device)


# -- the method -----------------------------------------------------------------------------------
#: The paper's headline claims, checked by ``snnarena claims`` (:mod:`snnarena.claims`).
PAPER_CLAIMS = (
    Claim(
        "memory-flat-in-T",
        "Learns online, forward in time: its saved memory does not grow with T (at most 10 % more at the largest T "
        "than at the smallest).",
        "Bellec et al., Nat. Commun. 11:3625 (2020), abstract and Methods (eligibility traces computed forward)",
        "abstract (online learning, no backward in time), confirmed in the official code",
        Check("growth", "peak_activation_bytes", "<=", 1.1),
        Conditions("LSNN (LIF + ALIF) on TIMIT / store-recall, T in the thousands", models=("rsnn",), T=(1000,)),
    ),
)


class EProp(GradientMethod[SpikingModel | RandomFeedback]):
    """E-prop: eligibility traces forward in time times a learning signal from the readout error."""

    name = "eprop"
    CLAIMS = PAPER_CLAIMS
    memory_class = "O(1)"
    families = frozenset({"recurrent"})
    loss_forms = frozenset({"per_step"})  # the learning signal of step t needs the loss of step t
    tasks = frozenset(TASK_KINDS)  # passes t to loss.step: per-step targets split exactly
    PARAMS = (
        Param(
            "feedback",
            "str",
            "symmetric",
            "learning-signal weights B: symmetric (W_outᵀ, current) or random (fixed, drawn at prepare)",
            choices=("symmetric", "random"),
        ),
        Param(
            "feedback_seed",
            "int",
            None,
            "seed of the random feedback matrix; null: drawn from torch's global RNG (the cell's seed)",
            nullable=True,
        ),
        Param(
            "update",
            "str",
            "batch",
            "optimizer step once per batch (summed gradients) or after every time step (online)",
            choices=("batch", "step"),
        ),
    )

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        return super().skip(model, info, loss) or unsupported(model)

    def prepare(self, model: SpikingModel) -> SpikingModel | RandomFeedback:
        if self.params["feedback"] == "symmetric":
            return model
        readout = model.readout
        if not isinstance(readout, nn.Linear):
            raise ConfigurationError(f"eprop: random feedback needs a Linear readout, got {type(readout).__name__}")
        return RandomFeedback(model, draw_feedback(readout, self.params["feedback_seed"]))

    @property
    def updates_within_batch(self) -> bool:
        return self.params["update"] == "step"

    def _unwrap(self, module: SpikingModel | RandomFeedback) -> tuple[SpikingModel, Tensor | None]:
        """The model and the random feedback ``B`` ``[N, C]`` (``None``: symmetric)."""
        if isinstance(module, RandomFeedback):
            return module.model, module.feedback
        if self.params["feedback"] == "random":
            raise ConfigurationError(
                "eprop with feedback = 'random' needs the module returned by prepare(model), which holds B"
            )
        return module, None

    def unroll(
        self,
        model: SpikingModel | RandomFeedback,
        x: Tensor,
        y: Tensor,
        loss: SequenceLoss,
        clock: PhaseClock,
        update: Update,
    ) -> float:
        """All ``T`` steps: traces forward, the readout's exact gradient and ``L[t] e[t]`` per step."""
        net, feedback = self._unwrap(model)
        layer = TrainedLayer(net)
        readout = net.readout
        assert isinstance(readout, nn.Linear)
        T = x.shape[0]
        state: RecurrentState | None = None
        traces: EligibilityTraces | None = None
        total = 0.0
        with _HeldBytes() as held:
            for t, x_t in enumerate(x.unbind(0)):
                with clock.phase("forward"):
                    with torch.no_grad():
                        presynaptic = layer.presynaptic(x_t, state)
                        spikes, state, psi = layer.step(x_t, state)
                        if traces is None:
                            traces = EligibilityTraces.zeros(layer.neuron, spikes, presynaptic.shape[1])
                        eligibility = traces.step(presynaptic, psi, spikes)
                        held.set(traces.nbytes)
                    logits = readout(spikes)
                    logits.retain_grad()
                    value = loss.step(logits, y, T, t)
                with clock.phase("backward"):
                    value.backward()  # the readout's exact gradient, and δ[t] = ∂L_t/∂o[t]
                    assert logits.grad is not None
                    with torch.no_grad():
                        weights = readout.weight if feedback is None else feedback.T  # Bᵀ [C, N]
                        layer.add_gradient(eligibility.weight_gradient(logits.grad @ weights))
                update()
                total += float(value.detach())
        return total


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(EProp)
