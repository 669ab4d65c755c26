"""Memory-efficient BPTT (Gruslys et al., NeurIPS 2016) against plain BPTT at T = 1000.

Trains steps of a LIF MLP with ``bptt`` (multi-step and single-step unrolling) and
``checkpointed_bptt`` (√T baseline and the DP policies over several slot budgets) and prints, side
by side, the memory and the median step time relative to BPTT, next to the paper's headline
(abstract: at T = 1000, 95 % less memory for about one third more time per iteration).

Memory columns: ``peak`` = the arena's device-independent measure (``SavedTensorMeter``): bytes
autograd holds for backward plus the checkpointed states the executor reports holding, measured
jointly; ``stored`` = the peak of those checkpointed states alone; ``mem×`` = peak / BPTT's peak.
On CUDA ``cuda MiB`` is ``max_memory_allocated`` during one step, minus what was allocated before it. ``time×`` is the
median step time over single-step BPTT (``model.step`` unrolled, the same per-step execution the
checkpointing executor uses: the paper's "standard BPTT" of the same cell); ``time× multi`` is
over the arena's default multi-step BPTT. ``fwd/T`` is ``C(T, m)/T`` from the dynamic program,
checked against the executed step count; ``seg`` is the plan's unit in time steps (``--segments``:
1 is the paper's per-step plan, more runs each unit as one ``forward_seq`` and one backward, for one
unit's graph memory on top of the budget; ``m`` then counts states at unit boundaries).

    python benchmarks/memory_efficient_bptt.py                 # CPU, 2-3 min on 2 busy cores
    python benchmarks/memory_efficient_bptt.py --device cuda --hidden 256,256 --batch 64
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model, neuron_factory
from snnarena.host import HostConfig, PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import DeviceMemory, PhaseClock, SavedTensorMeter
from snnarena.method import GradientMethod
from snnarena_plugins.checkpointed_bptt import CheckpointedBPTT, forward_cost, measure_step, sqrt_cost, sqrt_segment

PAPER_MEMORY, PAPER_TIME = 0.05, 1.33


@dataclass
class Row:
    label: str
    policy: str
    segment: int
    slots: str
    alpha: str
    fwd_per_T: float
    peak: int
    stored: int
    cuda: float
    ms: float


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, default=1000, help="sequence length")
    p.add_argument("--hidden", type=_ints, default=[64, 64], help="hidden LIF layer widths, e.g. 64,64")
    p.add_argument("--inputs", type=int, default=32, help="input channels")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--budgets", type=_ints, default=[10, 32, 100], help="slot budgets for the DP policies")
    p.add_argument("--policies", default="hsm,msm", help="DP policies among hsm,ism,msm (sqrt always runs)")
    p.add_argument(
        "--segments",
        type=_ints,
        default=[1, 25],
        help="time steps per unit of the DP plans (1: the paper's per-step plan), e.g. 1,25",
    )
    p.add_argument(
        "--max-cost",
        type=float,
        default=12.0,
        help="skip DP configurations needing more than this many forward steps per time step",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed training steps per configuration (median)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest for small layers)")
    p.add_argument("--loss", choices=("per_step", "rate"), default="per_step")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def _model(host: PluginHost, args: argparse.Namespace) -> Any:
    torch.manual_seed(args.seed)
    info = DataInfo((args.inputs,), args.classes, args.T, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", {"tau": 2.0}, "atan")
    model = build_model(host, "mlp", info, make, {"hidden": args.hidden})
    return model.to(device=args.device, dtype=getattr(torch, args.dtype))


def _measure(
    method: GradientMethod, model: Any, x: torch.Tensor, y: torch.Tensor, loss: SequenceLoss, args: argparse.Namespace
) -> tuple[int, int, float, float]:
    """Saved-bytes peak, stored-state peak, CUDA step peak (MiB) and median step time (ms)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    clock = PhaseClock(args.device, enabled=False)
    # warm-up step, metered (it also builds the DP table); not timed
    with SavedTensorMeter(exclude=list(model.parameters()) + [x]) as meter:
        method.train_step(model, x, y, loss, optimizer, clock)
    stats = getattr(method, "last_stats", None)
    stored = stats.peak_state_bytes if stats is not None else 0
    device = DeviceMemory(args.device)
    cuda = math.nan
    if args.device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        device.reset()
        method.train_step(model, x, y, loss, optimizer, clock)
        cuda = (device.peak_bytes() - base) / 2**20
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        method.train_step(model, x, y, loss, optimizer, clock)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return meter.peak_bytes, stored, cuda, 1e3 * statistics.median(times)


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    host = PluginHost.load(HostConfig())
    loss = SequenceLoss(args.loss)
    model = _model(host, args)
    g = torch.Generator().manual_seed(args.seed + 1)
    x = (torch.rand(args.T, args.batch, args.inputs, generator=g) < 0.3).to(model.readout.weight.dtype)
    x = (x * 2.0).to(args.device)
    y = torch.randint(0, args.classes, (args.batch,), generator=g).to(args.device)
    sizes = measure_step(model, x)
    policies = [p for p in args.policies.split(",") if p]

    configs: list[tuple[str, GradientMethod, str, int, str, str, float]] = [
        ("bptt (multi-step)", build_method(host, "bptt"), "-", 1, "T", "-", 1.0),
        ("bptt (single-step)", build_method(host, "bptt", {"step_mode": "single"}), "-", 1, "T", "-", 1.0),
        (
            "checkpointed",
            CheckpointedBPTT(policy="sqrt"),
            "sqrt",
            sqrt_segment(args.T),
            f"√T={sqrt_segment(args.T)}",
            "-",
            sqrt_cost(args.T) / args.T,
        ),
    ]
    skipped = []
    for segment in args.segments:
        units = math.ceil(args.T / segment)
        unit_alpha = measure_step(model, x, segment).alpha
        for policy in policies:
            alpha = unit_alpha if policy != "hsm" else 1
            for m in args.budgets:
                per_step = forward_cost(units, m, policy, alpha) * segment / args.T  # exact when segment | T
                if per_step > args.max_cost:
                    skipped.append(f"{policy} seg={segment} m={m} (C(U,m)·segment/T = {per_step:.1f})")
                    continue
                method = CheckpointedBPTT(policy=policy, budget_slots=m, segment=segment)
                shown = str(alpha) if policy != "hsm" else "-"
                configs.append(("checkpointed", method, policy, segment, str(m), shown, per_step))

    print(
        f"LIF MLP {args.inputs}-{'-'.join(map(str, args.hidden))}-{args.classes}, T={args.T}, batch={args.batch}, "
        f"{args.dtype}, {args.device}, {args.threads} thread(s), loss={args.loss}, {args.repeats} timed steps"
    )
    print(
        f"one hidden state = {sizes.state_bytes} B (1 slot); one step saves {sizes.step_saved_bytes} B; "
        f"internal state α = {sizes.alpha} slots"
    )
    rows = []
    for label, method, policy, segment, slots, alpha, per_step in configs:
        peak, stored, cuda, ms = _measure(method, model, x, y, loss, args)
        if isinstance(method, CheckpointedBPTT):
            stats = method.last_stats
            assert stats is not None and stats.forward_units == stats.predicted_units
            per_step = method.last_forward_steps / args.T
        rows.append(Row(label, policy, segment, slots, alpha, per_step, peak, stored, cuda, ms))

    ref, single = rows[0], rows[1]
    header = (
        f"{'method':<19} {'policy':<6} {'seg':>4} {'m':>7} {'α':>3} {'fwd/T':>6} {'peak MiB':>10} {'stored MiB':>10} "
        f"{'mem×':>7} {'ms/step':>9} {'time×':>6} {'time× multi':>11}"
    )
    if args.device == "cuda":
        header += f" {'cuda MiB':>9} {'cuda×':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        mem = r.peak / ref.peak
        line = (
            f"{r.label:<19} {r.policy:<6} {r.segment:>4} {r.slots:>7} {r.alpha:>3} {r.fwd_per_T:>6.2f} "
            f"{r.peak / 2**20:>10.3f} {r.stored / 2**20:>10.3f} {mem:>7.3f} {r.ms:>9.1f} "
            f"{r.ms / single.ms:>6.2f} {r.ms / ref.ms:>11.2f}"
        )
        if args.device == "cuda":
            line += f" {r.cuda:>9.2f} {r.cuda / ref.cuda:>6.2f}"
        print(line)
    print(
        f"{'Gruslys et al. 2016':<19} {'paper':<6} {'':>4} {'':>7} {'':>3} {'':>6} {'':>10} {'':>10} "
        f"{PAPER_MEMORY:>7.3f} {'':>9} {PAPER_TIME:>6.2f} {'':>11}   (abstract, T=1000: -95 % memory, +33 % time)"
    )
    if skipped:
        print("skipped (more than --max-cost forward steps per time step): " + ", ".join(skipped))
    within = [r for r in rows[2:] if r.peak / ref.peak <= PAPER_MEMORY]
    if within:
        best = min(within, key=lambda r: r.ms)
        print(
            f"fastest configuration within {PAPER_MEMORY:.0%} of BPTT's memory: "
            f"{best.policy} seg={best.segment} m={best.slots}: "
            f"{best.peak / ref.peak:.3f}x memory, {best.ms / single.ms:.2f}x the time of "
            f"single-step BPTT ({best.ms / ref.ms:.2f}x multi-step)"
        )


if __name__ == "__main__":
    main()
