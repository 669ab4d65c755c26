"""What the harness adds to a training step: a real suite cell against a bare PyTorch loop.

The cell (``snnarena.cell.run_cell`` on a one-cell suite: BPTT, MLP 64-128-128-10, LIF, digits
rate-coded, T=16, B=64, Adam) reports ``step_time_ms``, the median over its steps after
``timing_warmup`` of forward + backward + optimizer. The bare loop builds the same model and
data (``build_cell`` with the cell's seed), walks the same batches in the same order, and times
``zero_grad``, ``model.forward_seq``, the loss, ``backward`` and ``optimizer.step`` with nothing
around them; ``bare + meter`` adds only the cell's ``SavedTensorMeter``. ``--rounds`` rounds of
(bare, bare + meter, cell) run in rotating order so load drifting during the run hits all alike;
the bare loops' steps are pooled, the cell's figure is the median of its rounds' ``step_time_ms``.

    python benchmarks/harness_overhead.py               # bptt multi- and single-step, ~30 s
    python benchmarks/harness_overhead.py --steps 40 --modes multi
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from snnarena.cell import build_cell, run_cell
from snnarena.host import HostConfig, PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import SavedTensorMeter
from snnarena.model import SpikingModel
from snnarena.suite import CellSpec, parse_suite

SUITE = """
name = "harness-overhead"
[train]
steps = {steps}
batch_size = {batch}
loss = "per_step"
optimizer = {{ name = "adam", lr = 1e-3 }}
eval_every_epoch = false
timing_warmup = {warmup}
[grid]
seeds = [0]
T = [{T}]
[[methods]]
name = "bptt"
params = {{ step_mode = "{mode}" }}
[[models]]
name = "mlp"
params = {{ hidden = [128, 128] }}
neuron = {{ name = "lif", params = {{ tau = 2.0 }}, surrogate = "atan" }}
[[datasets]]
name = "digits"
params = {{ encoding = "rate" }}
"""


@dataclass
class Overhead:
    mode: str
    cell_ms: float
    bare_ms: float
    metered_ms: float

    @property
    def ratio(self) -> float:
        return self.cell_ms / self.bare_ms


def cell_spec(host: PluginHost, args: argparse.Namespace, mode: str) -> CellSpec:
    text = SUITE.format(steps=args.steps, batch=args.batch, warmup=args.warmup, T=args.T, mode=mode)
    (spec,) = list(parse_suite(text, host, "<harness_overhead>").cells)
    return spec


def bare_loop(spec: CellSpec, host: PluginHost, meter: bool) -> list[float]:
    """Step times (s) of a hand-written loop over the cell's model, data and batch order."""
    built = build_cell(spec, host, torch.device("cpu"))
    model, optimizer, loss = built.model, built.optimizer, built.loss
    generator = torch.Generator().manual_seed(spec.seed)
    exclude = list(model.parameters())
    times: list[float] = []
    model.train()
    while len(times) < spec.train["steps"]:
        for x, y in built.data.train_batches(spec.train["batch_size"], generator):
            start = time.perf_counter()
            if meter:
                with SavedTensorMeter(exclude + [x, y]):
                    _step(model, optimizer, loss, x, y, spec.method_params.get("step_mode", "multi"))
            else:
                _step(model, optimizer, loss, x, y, spec.method_params.get("step_mode", "multi"))
            times.append(time.perf_counter() - start)
            if len(times) >= spec.train["steps"]:
                break
    return times[spec.train["timing_warmup"] :]


def _step(
    model: SpikingModel, optimizer: torch.optim.Optimizer, loss: SequenceLoss, x: Tensor, y: Tensor, mode: str
) -> None:
    optimizer.zero_grad(set_to_none=True)
    if mode == "multi":
        logits = model.forward_seq(x).logits
    else:
        state, outs = model.init_state(), []
        for x_t in x.unbind(0):
            out = model.step(x_t, state)
            state = out.state
            outs.append(out.logits)
        logits = torch.stack(outs)
    loss.full(logits, y).backward()
    optimizer.step()


def measure(host: PluginHost, args: argparse.Namespace, mode: str) -> Overhead:
    """``args.rounds`` rounds of (bare loop, bare + meter, cell), the order rotating each round so
    load drifting during the run hits all three alike; medians over the pooled steps (bare loops)
    and over the rounds' ``step_time_ms`` (the cell)."""
    spec = cell_spec(host, args, mode)
    bare: list[float] = []
    metered: list[float] = []
    cells: list[float] = []

    def run_cell_once() -> None:
        record = run_cell(spec, host, "harness-overhead", "cpu")
        if record.row["status"] != "done":
            raise RuntimeError(f"the cell did not finish: {record.row.get('reason')}")
        cells.append(record.row["step_time_ms"])

    runs = [
        lambda: bare.extend(bare_loop(spec, host, meter=False)),
        lambda: metered.extend(bare_loop(spec, host, meter=True)),
        run_cell_once,
    ]
    for r in range(args.rounds):
        for run in runs[r % 3 :] + runs[: r % 3]:
            run()
    return Overhead(mode, statistics.median(cells), 1e3 * statistics.median(bare), 1e3 * statistics.median(metered))


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--steps", type=int, default=25, help="training steps of the cell and of each bare loop")
    p.add_argument("--warmup", type=int, default=3, help="the cell's timing_warmup (also dropped from the bare loop)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--T", type=int, default=16)
    p.add_argument("--modes", type=lambda s: s.split(","), default=["multi", "single"], help="bptt step modes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="rounds of (bare, bare + meter, cell), order rotating")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Overhead]:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    host = PluginHost.load(HostConfig())
    rows = [measure(host, args, mode) for mode in args.modes]
    print(
        f"BPTT, MLP 64-128-128-10 LIF, digits rate, T={args.T}, B={args.batch}, Adam, {args.threads} thread(s); "
        f"median of {args.steps - args.warmup} steps x {args.rounds} rounds (order rotating); "
        f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    head = f"{'bptt step_mode':<15} {'cell ms':>8} {'bare ms':>8} {'bare+meter':>11} {'cell/bare':>10}  target ≤ 1.05"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r.mode:<15} {r.cell_ms:>8.2f} {r.bare_ms:>8.2f} {r.metered_ms:>11.2f} {r.ratio:>10.3f}")
    return rows


if __name__ == "__main__":
    main()
