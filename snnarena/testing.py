"""Conformance checks every gradient method must pass, for snnarena's tests and for plugins' own.

Each check is a plain function that raises ``AssertionError`` with a message naming the method
and what went wrong; :func:`run_conformance` runs them all. A contributor's pytest suite calls
them on a small float64 model::

    # tests/test_my_method.py of an external plugin
    import torch
    from snnarena.factory import build_model, neuron_factory
    from snnarena.data import DataInfo
    from snnarena.host import PluginHost
    from snnarena.testing import run_conformance

    from my_package.my_plugin import MyMethod

    def make_model():
        host = PluginHost.load()
        info = DataInfo((6,), 3, T=8, n_train=0, n_test=0)
        make = neuron_factory(host, "lif", {"v_threshold": 0.25}, "atan")
        return build_model(host, "mlp", info, make, {"hidden": [7, 5]}).double()

    def test_my_method_conforms():
        run_conformance(lambda: MyMethod(K=4), make_model)

Factories (``method_factory()``, ``model_factory()``) must build a fresh object on each call;
checks that need two identical runs seed ``torch`` before calling them. Batches are
``(x [T, B, *input_shape], y [B])``; :func:`make_batch` draws one for a model (inputs uniform in
``[0, 2)``). Pick a model whose every layer spikes on such inputs (the low threshold above):
a layer that never spikes leaves the weights after it with an all-zero gradient, which
:func:`check_gradients_reach_parameters` reports.

What is checked:

* :func:`check_gradients_reach_parameters` — every trainable parameter of the prepared module
  (but those the method names in ``frozen_parameters``) gets a finite gradient that is non-zero
  somewhere, the loss is finite and ``accumulate_gradients`` leaves the parameters unchanged;
* :func:`check_accumulates` — ``accumulate_gradients`` adds to ``p.grad`` (twice = double);
* :func:`check_reproducible` — same seed, same batch → bit-identical loss and parameters after
  one ``train_step`` (CPU);
* :func:`check_no_state_leak` — the gradient of batch 2 is the same whether or not batch 1 was
  processed first (no state carried across batches);
* :func:`check_skip_reason` — ``skip`` returns ``None`` or a non-empty string, and a reason
  for every loss form outside ``loss_forms`` and every task outside ``tasks``;
* :func:`check_per_step_tasks` — for every per-step task in ``tasks`` (:mod:`snnarena.task`), the
  loss ``accumulate_gradients`` returns is the task's loss of the plain forward pass (each segment
  or step took its share of the targets at its own steps) and every parameter gets a gradient;
* :func:`check_memory_class` — the peak bytes saved for backward (:class:`SavedTensorMeter`)
  over several ``T`` match ``memory_class``: ``O(T)`` grows about linearly, ``O(1)`` is flat
  (max/min ≤ 1.15), ``O(K)`` is flat over ``T ≥ K`` (``K`` from the method's params),
  ``budget`` grows at most like ``√T`` (bounded by a budget, which by default may be
  ``⌈√T⌉``-sized).

A model plugin checks its own step/sequence contract with :func:`run_model_conformance`
(``run_model_conformance(make_model)``), which runs the checks of the model's ``family``
(:func:`model_checks`):

* ``feedforward`` and ``recurrent``: :func:`check_step_matches_sequence` — ``T`` calls of ``step``
  give ``forward_seq``'s logits, spikes and final state; :func:`check_resumes_from_state` — a
  sequence run in two parts, the second from the first's final state, equals the whole run (the
  state carries everything the dynamics need); :func:`check_state_detaches` — the state is made
  of tensors and ``NamedTuple`` instances that :func:`~snnarena.neuron.detach_state` detaches;
* ``recurrent`` also: :func:`check_recurrent_state` — every
  :class:`~snnarena.model.RecurrentStage` keeps its output ``S_l[t]`` in its state after step
  ``t``, and the model's output depends on the recurrence (zeroing the fed-back outputs changes
  the logits of a later step) when any stage has a recurrent synapse;
* ``convergent`` also: :func:`check_convergent_contract` — layer states ``[B, n_l]``, logits =
  output layer, ``relax`` (with a nudge) = repeated ``dynamics``, ``phi`` finite ``[B]`` and
  depending on every parameter;
* ``graph`` also: :func:`check_graph_contract` — outputs per node of ``info.graph``, and
  messages pass along its edges. Every family's checks use :func:`make_batch`, whose batch is
  the graph's nodes for a graph model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from snnarena.data import DataInfo
from snnarena.loss import LOSS_FORMS, LossForm, SequenceLoss
from snnarena.measure import PhaseClock, SavedTensorMeter
from snnarena.method import GradientMethod
from snnarena.model import ConvergentModel, GraphModel, RecurrentStage, SpikingModel
from snnarena.neuron import detach_state
from snnarena.task import IGNORE_INDEX, TASK_KINDS, task_of

MethodFactory = Callable[[], GradientMethod]
ModelFactory = Callable[[], SpikingModel]
Batch = tuple[Tensor, Tensor]
#: A model check: raises ``AssertionError`` if ``model`` breaks its contract on inputs ``x``.
ModelCheck = Callable[[SpikingModel, Tensor], None]

#: Largest max/min ratio of saved-bytes peaks that still counts as flat.
FLAT_TOLERANCE = 1.15


def _name(method: GradientMethod) -> str:
    return method.name or type(method).__name__


def _clock() -> PhaseClock:
    return PhaseClock(enabled=False)


def _trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def _grads(module: nn.Module) -> dict[str, Tensor | None]:
    return {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in _trainable(module)}


def _zero(module: nn.Module) -> None:
    for p in module.parameters():
        p.grad = None


def default_loss(method: GradientMethod) -> SequenceLoss:
    """``per_step`` if the method supports it, else its first supported loss form, for the first
    task (in :data:`~snnarena.task.TASK_KINDS` order) the method trains that has that form."""
    pairs = [
        (form, task)
        for form in LOSS_FORMS
        for task in TASK_KINDS
        if form in method.loss_forms and task in method.tasks and form in task_of(task).loss_forms
    ]
    if not pairs:
        raise AssertionError(
            f"{_name(method)}: no task in tasks {sorted(method.tasks)} has a loss form of loss_forms "
            f"{sorted(method.loss_forms)}"
        )
    return SequenceLoss(*pairs[0])


def make_batch(model: SpikingModel, T: int, batch: int = 4, seed: int = 1) -> Batch:
    """Inputs ``[T, B, *input_shape]`` uniform in ``[0, 2)`` (strong enough to make LIF layers
    spike) in the model's dtype/device, and labels ``[B]``; for a graph model ``B`` is its
    graph's number of nodes."""
    param = next(model.parameters())
    g = torch.Generator().manual_seed(seed)
    info: DataInfo = model.info
    if info.graph is not None:
        batch = info.graph.n_nodes  # a graph model's batch is the nodes of its graph
    x = torch.rand(T, batch, *info.input_shape, generator=g, dtype=torch.float64) * 2.0
    y = torch.randint(0, info.n_classes, (batch,), generator=g)
    return x.to(dtype=param.dtype, device=param.device), y.to(param.device)


def check_gradients_reach_parameters(
    method: GradientMethod, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss
) -> None:
    """Every trainable parameter of ``method.prepare(model)`` but those in ``frozen_parameters``
    gets a finite, non-zero-somewhere gradient from ``accumulate_gradients``; the loss is finite;
    parameters are not changed."""
    name = _name(method)
    prepared = method.prepare(model)
    _zero(prepared)
    before = {n: p.detach().clone() for n, p in _trainable(prepared)}
    value = method.accumulate_gradients(prepared, x, y, loss, _clock())
    assert isinstance(value, float) and math.isfinite(value), (
        f"{name}: accumulate_gradients returned loss {value!r}, expected a finite float"
    )
    params = _trainable(prepared)
    assert params, f"{name}: the prepared module has no trainable parameters"
    frozen = method.frozen_parameters(prepared, model)
    unknown = frozen - {n for n, _ in params}
    assert not unknown, f"{name}: frozen_parameters names parameters the prepared module lacks: {sorted(unknown)}"
    for n, p in params:
        assert torch.equal(p.detach(), before[n]), (
            f"{name}: accumulate_gradients changed parameter {n!r} (it must not step an optimizer)"
        )
        if n in frozen:
            continue
        assert p.grad is not None, f"{name}: parameter {n!r} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: parameter {n!r} has a non-finite gradient"
        assert (p.grad != 0).any(), f"{name}: parameter {n!r} has an all-zero gradient"


def check_accumulates(
    method: GradientMethod, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, seed: int = 0
) -> None:
    """Two ``accumulate_gradients`` calls without zeroing give twice one call's gradient."""
    name = _name(method)
    prepared = method.prepare(model)
    _zero(prepared)
    torch.manual_seed(seed)
    method.accumulate_gradients(prepared, x, y, loss, _clock())
    once = _grads(prepared)
    torch.manual_seed(seed)
    method.accumulate_gradients(prepared, x, y, loss, _clock())
    for n, p in _trainable(prepared):
        first = once[n]
        if first is None:
            continue
        assert p.grad is not None and torch.allclose(p.grad, 2 * first, rtol=1e-9, atol=1e-12), (
            f"{name}: a second accumulate_gradients call did not add to {n!r}.grad "
            "(it must accumulate into p.grad, not overwrite it)"
        )


def check_reproducible(
    method_factory: MethodFactory, model_factory: ModelFactory, batch: Batch, loss: SequenceLoss, seed: int = 0
) -> None:
    """Same seed → bit-identical loss and parameters after one ``train_step`` (SGD, lr 0.1)."""
    x, y = batch
    runs = []
    for _ in range(2):
        torch.manual_seed(seed)
        model = model_factory()
        method = method_factory()
        prepared = method.prepare(model)
        optimizer = torch.optim.SGD(prepared.parameters(), lr=0.1)
        torch.manual_seed(seed + 1)
        value = method.train_step(prepared, x, y, loss, optimizer, _clock())
        runs.append((value, {k: v.detach().clone() for k, v in prepared.state_dict().items()}))
    name = _name(method)
    (v1, s1), (v2, s2) = runs
    assert v1 == v2 or (math.isnan(v1) and math.isnan(v2)), f"{name}: same seed gave losses {v1!r} and {v2!r}"
    assert s1.keys() == s2.keys(), f"{name}: same seed gave different state_dict keys"
    for k in s1:
        assert torch.equal(s1[k], s2[k]), f"{name}: same seed gave different values of {k!r} after one train_step"


def check_no_state_leak(
    method_factory: MethodFactory,
    model_factory: ModelFactory,
    batch1: Batch,
    batch2: Batch,
    loss: SequenceLoss,
    seed: int = 0,
) -> None:
    """The gradient of ``batch2`` does not depend on having processed ``batch1`` first.

    Run A: ``batch1`` then (grads zeroed) ``batch2``; run B: ``batch2`` only, on an identical fresh
    model and method. No optimizer step, and the RNG is seeded alike before ``batch2``.
    """
    grads = []
    for first in (batch1, None):
        torch.manual_seed(seed)
        model = model_factory()
        method = method_factory()
        prepared = method.prepare(model)
        if first is not None:
            torch.manual_seed(seed + 2)
            method.accumulate_gradients(prepared, *first, loss, _clock())
            _zero(prepared)
        torch.manual_seed(seed + 1)
        method.accumulate_gradients(prepared, *batch2, loss, _clock())
        grads.append(_grads(prepared))
    name = _name(method)
    after, alone = grads
    for n in alone:
        a, b = after[n], alone[n]
        if a is None or b is None:
            assert a is None and b is None, f"{name}: {n!r} got a gradient in only one of the two runs"
            continue
        diff = float((a - b).abs().max())
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), (
            f"{name}: the gradient of {n!r} on batch 2 changes by {diff:.3g} when batch 1 ran first "
            "(state leaks across batches)"
        )


def check_skip_reason(method: GradientMethod, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> None:
    """``skip`` returns ``None`` or a non-empty string; a loss form outside ``loss_forms`` and a task
    outside ``tasks`` get one."""
    name = _name(method)
    reason = method.skip(model, info, loss)
    assert reason is None or (isinstance(reason, str) and reason.strip()), (
        f"{name}: skip() returned {reason!r}; expected None or a non-empty reason"
    )
    for form in LOSS_FORMS:
        if form not in method.loss_forms:
            task = next(kind for kind in TASK_KINDS if form in task_of(kind).loss_forms)
            other = method.skip(model, info, SequenceLoss(form, task))
            assert isinstance(other, str) and other.strip(), (
                f"{name}: loss form {form!r} is not in loss_forms {sorted(method.loss_forms)} but "
                f"skip() returned {other!r} instead of a reason"
            )
    for task in TASK_KINDS:
        if task not in method.tasks:
            form = cast(LossForm, sorted(task_of(task).loss_forms)[-1])
            other = method.skip(model, info, SequenceLoss(form, task))
            assert isinstance(other, str) and other.strip(), (
                f"{name}: task {task!r} is not in tasks {sorted(method.tasks)} but "
                f"skip() returned {other!r} instead of a reason"
            )


#: The tasks :func:`make_targets` makes targets for (:func:`check_per_step_tasks` checks them).
PER_STEP_TASKS: frozenset[str] = frozenset({"per_step_classification", "per_step_regression"})


def make_targets(task: str, T: int, batch: int, n_out: int, seed: int = 1) -> Tensor:
    """Targets of a per-step ``task`` (:mod:`snnarena.task`) for ``n_out`` model outputs: every
    other step scored from step 1 on, the rest ``IGNORE_INDEX`` (classes) or NaN (regression)."""
    g = torch.Generator().manual_seed(seed)
    if task == "per_step_classification":
        y = torch.randint(0, n_out, (T, batch), generator=g)
        y[::2] = IGNORE_INDEX
        return y
    if task == "per_step_regression":
        z = torch.randn(T, batch, n_out, generator=g, dtype=torch.float64)
        z[::2] = math.nan
        return z
    raise ValueError(f"make_targets: {task!r} is not a per-step task")


def check_per_step_tasks(method_factory: MethodFactory, model_factory: ModelFactory, x: Tensor, seed: int = 0) -> None:
    """For every per-step task the method declares: the loss ``accumulate_gradients`` returns on
    ``x`` is the task's loss of the model's plain forward pass (a method that forgets to pass
    ``start``/``t`` to ``SequenceLoss.segment``/``step`` scores the wrong steps), and every trainable
    parameter gets a gradient."""
    for task in sorted(set(method_factory().tasks) & PER_STEP_TASKS):
        method = method_factory()
        torch.manual_seed(seed)
        model = model_factory()
        loss = SequenceLoss("per_step", task)
        reason = method.skip(model, model.info, loss)
        assert reason is None, f"{_name(method)} declares task {task!r} but skips the model: {reason}"
        y = make_targets(task, x.shape[0], x.shape[1], model.info.n_classes, seed + 1).to(x.device)
        if y.is_floating_point():
            y = y.to(x.dtype)
        with torch.no_grad():
            expected = float(loss.full(model.forward_seq(x).logits, y))
        check_gradients_reach_parameters(method, model, x, y, loss)
        _zero(model)
        value = method.accumulate_gradients(method.prepare(model), x, y, loss, _clock())
        assert math.isclose(value, expected, rel_tol=1e-5, abs_tol=1e-7), (
            f"{_name(method)}: on {task} targets accumulate_gradients returned loss {value!r}, but the loss of "
            f"the forward pass is {expected!r}; pass start/t to SequenceLoss.segment/step"
        )


def saved_bytes_over_T(
    method_factory: MethodFactory,
    model_factory: ModelFactory,
    Ts: Sequence[int],
    loss: SequenceLoss,
    batch: int = 4,
    seed: int = 0,
) -> dict[int, int]:
    """Peak bytes saved for backward by one ``accumulate_gradients`` call, per ``T``."""
    peaks = {}
    for T in Ts:
        torch.manual_seed(seed)
        model = model_factory()
        method = method_factory()
        prepared = method.prepare(model)
        x, y = make_batch(model, T, batch, seed=seed + T)
        _zero(prepared)
        with SavedTensorMeter(exclude=list(prepared.parameters()) + [x]) as meter:
            method.accumulate_gradients(prepared, x, y, loss, _clock())
        peaks[T] = meter.peak_bytes
    return peaks


def check_memory_class(
    method_factory: MethodFactory,
    model_factory: ModelFactory,
    Ts: Sequence[int] = (8, 16, 32, 64),
    loss: SequenceLoss | None = None,
    batch: int = 4,
    seed: int = 0,
) -> dict[int, int]:
    """The saved-bytes peak over ``Ts`` is consistent with ``method.memory_class``; returns the peaks."""
    method = method_factory()
    name, kind = _name(method), method.memory_class
    loss = loss or default_loss(method)
    peaks = saved_bytes_over_T(method_factory, model_factory, sorted(Ts), loss, batch, seed)
    shown = ", ".join(f"T={T}: {b} B" for T, b in peaks.items())
    assert all(b > 0 for b in peaks.values()), f"{name}: nothing was saved for backward ({shown})"
    if kind == "O(T)":
        lo, hi = min(peaks), max(peaks)
        growth, expected = peaks[hi] / peaks[lo], hi / lo
        assert 0.5 * expected <= growth <= 1.5 * expected, (
            f"{name} declares O(T) but its saved-bytes peak grows {growth:.2f}x while T grows {expected:.0f}x ({shown})"
        )
        return peaks
    if kind == "O(1)":
        flat = peaks
    elif kind == "O(K)":
        K = method.params.get("K")
        assert isinstance(K, int), f"{name} declares O(K) but has no integer parameter 'K'"
        flat = {T: b for T, b in peaks.items() if T >= K}
        assert len(flat) >= 2, f"{name}: check_memory_class needs two T >= K={K}, got Ts={sorted(Ts)}"
    elif kind == "budget":
        lo, hi = min(peaks), max(peaks)
        growth, bound = peaks[hi] / peaks[lo], FLAT_TOLERANCE * math.sqrt(hi / lo)
        assert growth <= bound, (
            f"{name} declares a memory budget but its saved-bytes peak grows {growth:.2f}x while T "
            f"grows {hi / lo:.0f}x (allowed: at most like sqrt(T), {bound:.2f}x; {shown})"
        )
        return peaks
    else:
        raise AssertionError(f"{name}: unknown memory_class {kind!r}")
    ratio = max(flat.values()) / min(flat.values())
    assert ratio <= FLAT_TOLERANCE, (
        f"{name} declares {kind} but its saved-bytes peak varies {ratio:.2f}x over "
        f"T in {sorted(flat)} (allowed {FLAT_TOLERANCE}; {shown})"
    )
    return peaks


def run_conformance(
    method_factory: MethodFactory,
    model_factory: ModelFactory,
    loss: SequenceLoss | None = None,
    T: int = 8,
    Ts: Sequence[int] = (8, 16, 32, 64),
    batch: int = 4,
    seed: int = 0,
) -> None:
    """Run every check above on fresh objects from the factories; raises on the first failure.

    ``loss`` defaults to :func:`default_loss` of the method; a method that skips the model
    raises ``AssertionError`` too (pick a model it supports).
    """
    method = method_factory()
    torch.manual_seed(seed)
    model = model_factory()
    loss = loss or default_loss(method)
    check_skip_reason(method, model, model.info, loss)
    reason = method.skip(model, model.info, loss)
    assert reason is None, f"{_name(method)} skips the conformance model: {reason}"
    batch1 = make_batch(model, T, batch, seed=seed + 1)
    batch2 = make_batch(model, T, batch, seed=seed + 2)
    check_gradients_reach_parameters(method, model, *batch1, loss)
    check_per_step_tasks(method_factory, model_factory, batch1[0], seed)
    torch.manual_seed(seed)
    check_accumulates(method_factory(), model_factory(), *batch1, loss, seed=seed)
    check_reproducible(method_factory, model_factory, batch1, loss, seed=seed)
    check_no_state_leak(method_factory, model_factory, batch1, batch2, loss, seed=seed)
    check_memory_class(method_factory, model_factory, Ts, loss, batch, seed)


# -- models ------------------------------------------------------------------------------------


def _model_name(model: SpikingModel) -> str:
    return model.name or type(model).__name__


def _tolerance(x: Tensor) -> tuple[float, float]:
    """``(rtol, atol)`` for comparing two evaluation orders of the same computation (round-off)."""
    return (1e-9, 1e-11) if x.dtype == torch.float64 else (1e-4, 1e-5)


def _tensors(state: object) -> list[Tensor]:
    """The tensors of a nested state, in order (``None`` entries skipped)."""
    if isinstance(state, Tensor):
        return [state]
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in _tensors(item)]
    return []


def _assert_close(
    name: str, what: str, got: Sequence[Tensor], expected: Sequence[Tensor], tol: tuple[float, float]
) -> None:
    assert len(got) == len(expected), f"{name}: {what}: {len(got)} tensors, expected {len(expected)}"
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.shape == b.shape, f"{name}: {what}[{i}]: shape {list(a.shape)}, expected {list(b.shape)}"
        diff = float((a - b).abs().max()) if a.numel() else 0.0
        assert torch.allclose(a, b, rtol=tol[0], atol=tol[1]), f"{name}: {what}[{i}] differs by up to {diff:.3g}"


def check_step_matches_sequence(model: SpikingModel, x: Tensor) -> None:
    """``T`` calls of ``model.step`` from ``init_state()`` give the logits ``[T, B, C]``, the
    spikes of every stage and the final state of one ``forward_seq(x)`` call."""
    name = _model_name(model)
    with torch.no_grad():
        seq = model.forward_seq(x)
        state, logits, spikes = model.init_state(), [], []
        for x_t in x.unbind(0):
            out = model.step(x_t, state)
            state = out.state
            logits.append(out.logits)
            spikes.append(out.spikes)
    tol = _tolerance(x)
    _assert_close(name, "step logits vs forward_seq", [torch.stack(logits)], [seq.logits], tol)
    stepped = [torch.stack([s[l] for s in spikes]) for l in range(len(seq.spikes))]
    _assert_close(name, "step spikes vs forward_seq", stepped, seq.spikes, tol)
    _assert_close(name, "step final state vs forward_seq", _tensors(state), _tensors(seq.state), tol)


def check_resumes_from_state(model: SpikingModel, x: Tensor) -> None:
    """``forward_seq(x[k:], state)`` from the final state of ``forward_seq(x[:k])`` continues the
    sequence exactly: the state holds everything the dynamics carry across steps."""
    name = _model_name(model)
    k = x.shape[0] // 2
    assert k >= 1, f"{name}: check_resumes_from_state needs T >= 2, got {x.shape[0]}"
    with torch.no_grad():
        whole = model.forward_seq(x)
        first = model.forward_seq(x[:k])
        second = model.forward_seq(x[k:], first.state)
    tol = _tolerance(x)
    _assert_close(name, "logits resumed from the state", [second.logits], [whole.logits[k:]], tol)
    _assert_close(name, "final state resumed from the state", _tensors(second.state), _tensors(whole.state), tol)


def check_state_detaches(model: SpikingModel, x: Tensor) -> None:
    """The state has one entry per entry of ``init_state()`` (a stage; a layer of a convergent
    model), made of tensors and ``NamedTuple`` instances (or ``None``); ``detach_state`` keeps its
    structure and values and cuts every tensor from the graph."""
    name = _model_name(model)
    state = model.forward_seq(x).state
    expected = len(model.init_state())
    assert len(state) == expected, f"{name}: the state has {len(state)} entries; init_state() has {expected}"
    for l, entry in enumerate(state):
        assert entry is None or isinstance(entry, Tensor) or hasattr(entry, "_fields"), (
            f"{name}: the state of stage {l} is a {type(entry).__name__}; use a NamedTuple of tensors "
            "so that methods can detach, store and recompute it"
        )
    detached = detach_state(state)
    assert [type(e) for e in detached] == [type(e) for e in state], f"{name}: detach_state changed the state's types"
    assert not any(t.requires_grad for t in _tensors(detached)), f"{name}: detach_state left tensors in the graph"
    _assert_close(name, "detached state", _tensors(detached), [t.detach() for t in _tensors(state)], _tolerance(x))


def check_recurrent_state(model: SpikingModel, x: Tensor) -> None:
    """Every :class:`RecurrentStage` keeps its output ``S_l[t]`` in its state after step ``t``;
    with a recurrent synapse, zeroing the fed-back outputs changes the logits of a later step."""
    name = _model_name(model)
    stages = {l: stage for l, stage in enumerate(model.stages) if isinstance(stage, RecurrentStage)}
    recurrent = list(stages)
    assert recurrent, f"{name}: family 'recurrent' but no stage is a RecurrentStage"
    with torch.no_grad():
        state = model.init_state()
        for x_t in x.unbind(0):
            out = model.step(x_t, state)
            for l in recurrent:
                assert torch.equal(out.state[l].output, out.spikes[l]), (
                    f"{name}: stage {l}'s state does not hold its output of the step (RecurrentState.output)"
                )
            state = out.state
        fed_back = [l for l, stage in stages.items() if stage.recurrent is not None]
        if not fed_back:
            return
        first = model.step(x[0], model.init_state()).state
        cut = list(first)
        for l in fed_back:
            cut[l] = first[l]._replace(output=torch.zeros_like(first[l].output))
        kept, zeroed = model.step(x[1], first).logits, model.step(x[1], cut).logits
    assert not torch.equal(kept, zeroed), (
        f"{name}: the logits of step 1 do not depend on the outputs fed back from step 0 "
        f"(stages {fed_back} have recurrent synapses)"
    )


def check_convergent_contract(model: SpikingModel, x: Tensor) -> None:
    """A :class:`~snnarena.model.ConvergentModel`: the state has one ``[B, n_l]`` entry per layer
    of ``layer_sizes`` (output last, ``n_L = n_classes``), a step's logits are the new output
    state, ``relax`` equals repeated ``dynamics`` (with a nudge added to the output layer's update),
    and ``phi`` is ``[B]``, finite, and depends on every trainable parameter."""
    name = _model_name(model)
    assert isinstance(model, ConvergentModel), f"{name}: family 'convergent' but not a ConvergentModel"
    u = x[0]
    sizes = model.layer_sizes
    assert sizes and sizes[-1] == model.info.n_classes, f"{name}: layer_sizes {sizes} must end with n_classes"
    with torch.no_grad():
        out = model.step(u, model.init_state())
        assert [tuple(s.shape) for s in out.state] == [(u.shape[0], n) for n in sizes], (
            f"{name}: the state after a step has shapes {[tuple(s.shape) for s in out.state]}, expected [B, n_l]"
        )
        assert torch.equal(out.logits, out.state[-1]), f"{name}: a step's logits are not the output layer's state"
        steps = 3
        manual = model.rest(u, model.init_state())
        nudge = 0.1 * torch.ones_like(out.logits)
        for _ in range(steps):
            new = model.dynamics(u, manual)
            new[-1] = new[-1] + nudge
            manual = new
        relaxed = model.relax(u, steps, nudge=lambda o: nudge)
        _assert_close(name, "relax with a nudge", relaxed, manual, _tolerance(x))
    state = [s.detach() for s in model.relax(u, 2)]
    phi = model.phi(u, state)
    assert phi.shape == (u.shape[0],) and bool(torch.isfinite(phi).all()), (
        f"{name}: phi returned {tuple(phi.shape)} (finite: {bool(torch.isfinite(phi).all())}); expected finite [B]"
    )
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(phi.sum(), [p for _, p in params], allow_unused=True)
    missing = [n for (n, _), g in zip(params, grads, strict=True) if g is None]
    assert not missing, f"{name}: phi does not depend on {missing}; EP's update of them would be zero"


def check_graph_contract(model: SpikingModel, x: Tensor) -> None:
    """A :class:`~snnarena.model.GraphModel`: it holds ``info.graph``, its outputs are per node
    (``[T, N, C]``), and they depend on the neighbours (changing one node's input changes the
    output of a neighbour, not only its own)."""
    name = _model_name(model)
    assert isinstance(model, GraphModel), f"{name}: family 'graph' but not a GraphModel"
    graph = model.info.graph
    assert graph is not None and model.graph is graph, f"{name}: the model does not hold info.graph"
    with torch.no_grad():
        logits = model.forward_seq(x).logits
        assert logits.shape[:2] == (x.shape[0], graph.n_nodes), (
            f"{name}: outputs {tuple(logits.shape)} are not per node [T, N={graph.n_nodes}, C]"
        )
        if graph.n_edges == 0:
            return
        source, target = (int(v) for v in graph.edge_index[:, 0])
        changed = x.clone()
        changed[:, source] += 5.0
        moved = model.forward_seq(changed).logits[:, target]
    assert not torch.equal(moved, logits[:, target]), (
        f"{name}: changing node {source}'s input leaves its neighbour {target}'s output unchanged "
        "(no message passing over info.graph)"
    )


def model_checks(family: str) -> tuple[ModelCheck, ...]:
    """The model checks of ``family`` (see the module docstring)."""
    common: tuple[ModelCheck, ...] = (check_step_matches_sequence, check_resumes_from_state, check_state_detaches)
    if family in ("feedforward", "residual"):
        return common
    if family == "recurrent":
        return (*common, check_recurrent_state)
    if family == "convergent":
        return (*common, check_convergent_contract)
    if family == "graph":
        return (*common, check_graph_contract)
    raise AssertionError(f"snnarena.testing has no model checks for family {family!r}")


def run_model_conformance(model_factory: ModelFactory, T: int = 8, batch: int = 4, seed: int = 0) -> None:
    """Run the checks of the model's family on a fresh model and a batch from :func:`make_batch`."""
    torch.manual_seed(seed)
    model = model_factory()
    x, _ = make_batch(model, T, batch, seed=seed + 1)
    for check in model_checks(model.family):
        check(model, x)


__all__ = [
    "FLAT_TOLERANCE",
    "check_accumulates",
    "check_convergent_contract",
    "check_graph_contract",
    "check_gradients_reach_parameters",
    "check_memory_class",
    "check_no_state_leak",
    "check_recurrent_state",
    "check_reproducible",
    "check_resumes_from_state",
    "check_skip_reason",
    "check_state_detaches",
    "check_step_matches_sequence",
    "default_loss",
    "make_batch",
    "model_checks",
    "run_conformance",
    "run_model_conformance",
    "saved_bytes_over_T",
]
