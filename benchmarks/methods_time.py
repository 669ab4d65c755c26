"""Each built-in gradient method's training-step time relative to BPTT on the same model.

A step is timed exactly as a suite cell times it (:func:`cell_step`: ``method.train_step`` under
the cell's ``PhaseClock`` and ``SavedTensorMeter``; the step time is the sum of the forward,
backward and optimizer phases), Adam as in the ``methods`` suite. The methods are interleaved
(one step each per round, rotating order) and the median over ``--repeats`` rounds after
``--warmup`` is shown, with ``× bptt`` (over multi-step BPTT) and ``× floor``: the floor is the
model's ``Linear`` layers over all ``T·B`` rows with no neuron dynamics, forward + backward + Adam.

Sizes: ``matmul`` (MLP 784-1024-1024-10, T=16, B=128: the matmuls dominate) and ``methods`` (the
``methods`` suite's MLP 64-128-128-10, T=16, B=64), each with 1 thread and torch's default. Then
checkpointed BPTT at T=1000 with a slot budget of about 5 % of BPTT's saved memory (``--long``):
the paper's per-step plans (hsm, msm), the same plans over units of ``--long-segment`` steps (one
``forward_seq`` and one backward per unit) and the √T baseline. Its ``fwd ms``/``bwd ms`` are the phases' medians and
``steps/T`` the forward time steps per time step: an exact checkpointed run costs at least about
``(steps/T · fwd + bwd) / (fwd + bwd)`` of BPTT with BPTT's ``fwd`` and ``bwd`` (≈ 1.5× at 2 steps/T
when, as with the fused LIF layers, backward costs about as much as forward).

    python benchmarks/methods_time.py                    # ~2 min on 2 busy cores
    python benchmarks/methods_time.py --sizes methods --threads 1 --repeats 5 --no-long
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model, neuron_factory
from snnarena.host import HostConfig, PluginHost
from snnarena.loss import LossForm, SequenceLoss
from snnarena.measure import PhaseClock, SavedTensorMeter
from snnarena.method import GradientMethod
from snnarena.model import SpikingModel
from snnarena_plugins.checkpointed_bptt import CheckpointedBPTT, measure_step


@dataclass(frozen=True)
class Size:
    inputs: int
    hidden: tuple[int, ...]
    classes: int
    T: int
    batch: int


SIZES = {
    "matmul": Size(784, (1024, 1024), 10, 16, 128),
    "methods": Size(64, (128, 128), 10, 16, 64),
}

#: (label, method name, params, loss form)
METHODS: tuple[tuple[str, str, dict[str, Any], LossForm], ...] = (
    ("bptt", "bptt", {}, "per_step"),
    ("bptt single-step", "bptt", {"step_mode": "single"}, "per_step"),
    ("ottt A", "ottt", {"mode": "A"}, "per_step"),
    ("ottt O", "ottt", {"mode": "O"}, "per_step"),
    ("sltt", "sltt", {}, "per_step"),
    ("sltt k=2", "sltt", {"k": 2}, "per_step"),
    ("ratebp", "ratebp", {}, "rate"),
    ("tbptt_local K=4", "tbptt_local", {"K": 4}, "per_step"),
    ("tbptt_local K=4 seg", "tbptt_local", {"K": 4, "update": "segment"}, "per_step"),
    ("checkpointed hsm m=3", "checkpointed_bptt", {"policy": "hsm", "budget_slots": 3}, "per_step"),
)


@dataclass
class Runner:
    """One method (or the floor) ready to step: its prepared module, optimizer, loss and clock."""

    label: str
    method: GradientMethod[Any] | None
    module: nn.Module
    optimizer: torch.optim.Optimizer
    loss: SequenceLoss
    clock: PhaseClock
    peak_saved: int = 0

    def phase_ms(self, phase: str) -> float:
        """Median time of one phase (``forward``, ``backward``, ``optimizer``) over the steps, in ms."""
        return 1e3 * statistics.median(s[phase] for s in self.clock.steps) if self.clock.steps else float("nan")

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(sum(s.values()) for s in self.clock.steps) if self.clock.steps else float("nan")


def cell_step(runner: Runner, x: Tensor, y: Tensor) -> None:
    """One training step measured as ``snnarena.cell.train`` measures it."""
    assert runner.method is not None
    exclude = list(runner.module.parameters())
    with SavedTensorMeter(exclude + [x, y]) as meter:
        runner.method.train_step(runner.module, x, y, runner.loss, runner.optimizer, runner.clock)
    runner.clock.end_step()
    runner.peak_saved = max(runner.peak_saved, meter.peak_bytes)


class Floor(nn.Module):
    """The model's ``Linear`` layers over all ``T·B`` rows, no neurons: ``[T, B, in] → [T, B, C]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.linears = nn.ModuleList(copy.deepcopy(m) for m in model.modules() if isinstance(m, nn.Linear))

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(0, 1)
        for linear in self.linears:
            h = linear(h)
        return h.unflatten(0, x.shape[:2])


def floor_step(runner: Runner, x: Tensor, y: Tensor) -> None:
    runner.optimizer.zero_grad(set_to_none=True)
    with runner.clock.phase("forward"):
        value = runner.loss.full(runner.module(x), y)
    with runner.clock.phase("backward"):
        value.backward()
    with runner.clock.phase("optimizer"):
        runner.optimizer.step()
    runner.clock.end_step()


def build_model_for(host: PluginHost, size: Size, seed: int) -> SpikingModel:
    torch.manual_seed(seed)
    info = DataInfo((size.inputs,), size.classes, size.T, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", {"tau": 2.0}, "atan")
    model = build_model(host, "mlp", info, make, {"hidden": list(size.hidden)})
    with torch.no_grad():  # every layer fires (a few to ~30 %)
        for stage in model.stages:
            stage.synapse.weight.mul_(3.0)
    return model


def batch_for(size: Size, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(size.T, size.batch, size.inputs, generator=g) < 0.3).float()
    return x, torch.randint(0, size.classes, (size.batch,), generator=g)


def runners_for(host: PluginHost, size: Size, labels: Sequence[str], seed: int, lr: float) -> list[Runner]:
    base = build_model_for(host, size, seed)
    out = []
    for label, name, params, form in METHODS:
        if label not in labels:
            continue
        method = build_method(host, name, params)
        prepared = method.prepare(copy.deepcopy(base))
        opt = torch.optim.Adam(prepared.parameters(), lr=lr)
        out.append(Runner(label, method, prepared, opt, SequenceLoss(form), PhaseClock("cpu")))
    floor = Floor(base)
    out.append(Runner("floor", None, floor, torch.optim.Adam(floor.parameters(), lr=lr), SequenceLoss(), PhaseClock()))
    return out


def interleave(runners: Sequence[Runner], x: Tensor, y: Tensor, warmup: int, repeats: int) -> None:
    """Rounds of one step per runner, rotating order; the warm-up rounds' times are dropped."""
    for r in range(warmup + repeats):
        order = list(runners[r % len(runners) :]) + list(runners[: r % len(runners)])
        for runner in order:
            (floor_step if runner.method is None else cell_step)(runner, x, y)
        if r == warmup - 1:
            for runner in runners:
                runner.clock.steps.clear()


def time_table(runners: Sequence[Runner]) -> list[str]:
    by = {r.label: r for r in runners}
    ref, floor = by["bptt"].median_ms, by["floor"].median_ms
    head = f"{'method':<22} {'ms/step':>8} {'× bptt':>7} {'× floor':>8} {'saved MiB':>10}"
    lines = [head, "-" * len(head)]
    for r in runners:
        saved = f"{r.peak_saved / 2**20:>10.2f}" if r.method is not None else f"{'':>10}"
        lines.append(f"{r.label:<22} {r.median_ms:>8.2f} {r.median_ms / ref:>7.2f} {r.median_ms / floor:>8.2f} {saved}")
    return lines


def run_size(host: PluginHost, name: str, threads: int, args: argparse.Namespace) -> list[Runner]:
    size = SIZES[name]
    default = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        runners = runners_for(host, size, args.methods, args.seed, args.lr)
        x, y = batch_for(size, args.seed + 1)
        interleave(runners, x, y, args.warmup, args.repeats)
    finally:
        torch.set_num_threads(default)
    print(
        f"\n{name}: MLP {size.inputs}-{'-'.join(map(str, size.hidden))}-{size.classes}, T={size.T}, B={size.batch}, "
        f"{threads or default} thread(s), median of {args.repeats} interleaved steps"
    )
    print("\n".join(time_table(runners)))
    return runners


# -- checkpointed BPTT at T = 1000 ------------------------------------------------------------------


def long_run(host: PluginHost, args: argparse.Namespace) -> list[Runner]:
    """Checkpointed BPTT (hsm, msm) with ~``args.fraction`` of BPTT's saved memory at T=``args.long_T``."""
    size = Size(32, (64, 64), 10, args.long_T, 16)
    default = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _long_run(host, args, size)
    finally:
        torch.set_num_threads(default)


def _long_run(host: PluginHost, args: argparse.Namespace, size: Size) -> list[Runner]:
    base = build_model_for(host, size, args.seed)
    x, y = batch_for(size, args.seed + 1)
    loss = SequenceLoss("per_step")
    runners = []
    for label, params in (("bptt", {}), ("bptt single-step", {"step_mode": "single"})):
        method = build_method(host, "bptt", params)
        model = copy.deepcopy(base)
        runners.append(Runner(label, method, model, torch.optim.SGD(model.parameters(), lr=1e-3), loss, PhaseClock()))
    cell_step(runners[0], x, y)
    bptt_peak = runners[0].peak_saved
    budget = args.fraction * bptt_peak
    for segment in (1, args.long_segment):
        # the budget counts stored states; the one unit back-propagated comes on top: leave room for it
        unit = measure_step(base, x, segment)
        m = max(2, int((budget - unit.step_bytes) // max(unit.state_bytes, 1)))
        for policy in ("hsm", "msm"):
            method = CheckpointedBPTT(policy=policy, budget_slots=m, segment=segment)
            model = copy.deepcopy(base)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            label = f"checkpointed {policy}" + (f" seg={segment}" if segment > 1 else "") + f" m={m}"
            runners.append(Runner(label, method, model, opt, loss, PhaseClock()))
    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    runners.append(Runner("checkpointed sqrt", CheckpointedBPTT(policy="sqrt"), model, opt, loss, PhaseClock()))
    for r in runners:
        r.clock.steps.clear()
    interleave_long(runners, x, y, args.long_repeats)
    ref = runners[0]
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"\ncheckpointed BPTT at T={size.T}: MLP 32-64-64-10, B=16, 1 thread, per_step loss, "
        f"median of {args.long_repeats}; target ≈ {args.fraction:.0%} of BPTT's saved memory "
        f"(Gruslys et al. 2016: 5 % memory for 1.33× time); load average {load}"
    )
    head = (
        f"{'method':<30} {'ms/step':>9} {'× bptt':>7} {'× single':>9} {'fwd ms':>7} {'bwd ms':>7} {'steps/T':>7} "
        f"{'saved MiB':>10} {'mem×':>7}"
    )
    print(head + "\n" + "-" * len(head))
    for r in runners:
        print(
            f"{r.label:<30} {r.median_ms:>9.1f} {r.median_ms / ref.median_ms:>7.2f} "
            f"{r.median_ms / runners[1].median_ms:>9.2f} {r.phase_ms('forward'):>7.1f} {r.phase_ms('backward'):>7.1f} "
            f"{_steps_per_T(r, size.T):>7.2f} {r.peak_saved / 2**20:>10.2f} "
            f"{r.peak_saved / ref.peak_saved:>7.3f}"
        )
    return runners


def _steps_per_T(runner: Runner, T: int) -> float:
    """Forward time steps per time step of the runner's last batch (1 for BPTT)."""
    if isinstance(runner.method, CheckpointedBPTT):
        return runner.method.last_forward_steps / T
    return 1.0


def interleave_long(runners: Sequence[Runner], x: Tensor, y: Tensor, repeats: int) -> None:
    for runner in runners:  # warm-up (builds the DP table)
        cell_step(runner, x, y)
        runner.clock.steps.clear()
    for _ in range(repeats):
        for runner in runners:
            cell_step(runner, x, y)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["matmul", "methods"])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="thread counts to run (0: torch's default)")
    p.add_argument(
        "--methods",
        type=lambda s: s.split(","),
        default=[m[0] for m in METHODS],
        help="comma-separated labels (default: all)",
    )
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-long", dest="long", action="store_false", help="skip the T=1000 checkpointed run")
    p.add_argument("--long-T", type=int, default=1000)
    p.add_argument("--long-repeats", type=int, default=3)
    p.add_argument("--long-segment", type=int, default=25, help="time steps per unit of the long run's segmented plans")
    p.add_argument("--fraction", type=float, default=0.05, help="memory target of the long run (share of BPTT's)")
    args = p.parse_args(argv)
    if "bptt" not in args.methods:
        args.methods.insert(0, "bptt")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, list[Runner]]:
    args = parse(argv)
    host = PluginHost.load(HostConfig())
    print(f"torch {torch.__version__}, cpu, default threads {torch.get_num_threads()}")
    out: dict[str, list[Runner]] = {}
    for name in args.sizes:
        for threads in args.threads:
            out[f"{name}/{threads}"] = run_size(host, name, threads, args)
    if args.long:
        out["long"] = long_run(host, args)
    return out


if __name__ == "__main__":
    main()
