"""snnarena's BPTT next to SpikingJelly, snnTorch and Norse on one network, in one process.

The network: a 3-layer LIF MLP ``784-H-H-10`` whose output layer spikes too; the loss is the
cross-entropy of the output spike counts ``CE(Σ_t S_3[t], y)``; one training step is forward,
backward and one SGD step. Every library gets the same initial weights (copied) and the same
LIF: ``λ = 1 − 1/τ`` (``τ = 2``), ``H[t] = λ V[t−1] + I[t]``, spike ``Θ(H − 1)``, hard reset to
0, fast-sigmoid surrogate ``1/(1 + |x|)²``. The ``floor`` is the three ``Linear`` layers over all
``T·B`` rows with no neuron dynamics (the matmuls every peer must do).

Differences that remain (none changes the forward spikes beyond float round-off, checked first):

* the reset's gradient: detached in snnarena, SpikingJelly and snnTorch (snnTorch's reset is
  always detached), not in Norse (``reset_value`` multiplies by the spike itself);
* Norse's ``LIFBoxCell`` (looped over time) integrates ``v + (dt/τ)(I − v)``, i.e. it scales its input by ``1/τ``: its
  synapses hold ``τ·W`` (``τ = 2``: exact in floating point), so its weight gradients are ``τ``× ours;
* SpikingJelly's ``SoftSign(α = 1)`` is ``1/(2(1 + |x|)²)``, half the others' surrogate;
  Norse's SuperSpike ignores its ``alpha`` (always ``1/(1 + |x|)²``);
* Θ(0): 1 in snnarena and SpikingJelly, 0 in snnTorch and Norse (ties have probability 0 here);
* snnTorch runs its idiomatic per-step loop (``Linear`` and ``Leaky`` each step); the others run
  each ``Linear`` once over all ``T·B`` rows;
* snnarena's synapses fed by spikes are ``SpikeLinear``, as in its ``mlp`` model: for the weight
  gradient they keep no copy of the spikes but rebuild them from the membrane ``H`` their LIF
  layer saved anyway (the peers keep the spikes, or per-step tensors holding them).

Times are the median of ``--repeats`` steps after ``--warmup``, the libraries interleaved (one
step each, in rotating order, per round). ``saved MiB``: the peak bytes autograd holds for backward
(``saved_tensors_hooks``, parameters and input excluded); on CUDA also ``max_memory_allocated``
during a step after a reset, and CUDA-event timing.

    python benchmarks/peers.py                                    # both default sizes, CPU
    python benchmarks/peers.py --sizes 25,64,512 --repeats 15 --threads 2
    python benchmarks/peers.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnarena.factory import neuron_factory
from snnarena.host import HostConfig, PluginHost
from snnarena.measure import SavedTensorMeter
from snnarena.model import Stage
from snnarena.multistep import SpikeLinear

TAU, THRESHOLD, INPUTS, CLASSES = 2.0, 1.0, 784, 10
#: Scales the default ``nn.Linear`` initialisation so that every layer fires (a few % to ~20 %).
WEIGHT_GAIN = 4.0
DEFAULT_SIZES = ((25, 64, 512), (100, 32, 256))


@dataclass
class Net:
    """A peer's network: ``forward(x [T, B, 784]) → output spikes [T, B, 10]`` and its parameters."""

    name: str
    forward: Callable[[Tensor], Tensor]
    module: nn.Module


@dataclass
class Result:
    """One peer's measurements at one size."""

    name: str
    times_ms: list[float] = field(default_factory=list)
    saved_bytes: int = 0
    cuda_bytes: float = float("nan")
    missing: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")


def initial_layers(hidden: int, seed: int) -> list[nn.Linear]:
    """The shared initial weights: ``784→H``, ``H→H``, ``H→10``, default init × :data:`WEIGHT_GAIN`."""
    torch.manual_seed(seed)
    layers = [nn.Linear(INPUTS, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, CLASSES)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(WEIGHT_GAIN)
            layer.bias.mul_(WEIGHT_GAIN)
    return layers


def copied(layers: Sequence[nn.Linear], scale: float = 1.0) -> nn.ModuleList:
    """Fresh ``Linear`` layers holding ``scale ×`` the weights of ``layers``."""
    out = nn.ModuleList()
    for layer in layers:
        new = nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            new.weight.copy_(layer.weight * scale)
            new.bias.copy_(layer.bias * scale)
        out.append(new)
    return out


def spike_linear(linear: nn.Linear) -> SpikeLinear:
    """A :class:`~snnarena.multistep.SpikeLinear` holding a copy of ``linear``'s weights."""
    out = SpikeLinear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    out.load_state_dict(linear.state_dict())
    return out


def _over_rows(linear: nn.Module, h: Tensor) -> Tensor:
    """``linear`` applied to all ``T·B`` rows of ``h`` ``[T, B, N]`` at once."""
    return linear(h.flatten(0, 1)).unflatten(0, h.shape[:2])


# -- the peers -------------------------------------------------------------------------------------


def floor_net(layers: Sequence[nn.Linear]) -> Net:
    linears = copied(layers)

    def forward(x: Tensor) -> Tensor:
        h = x
        for linear in linears:
            h = _over_rows(linear, h)
        return h

    return Net("floor", forward, linears)


def snnarena_net(layers: Sequence[nn.Linear]) -> Net:
    host = PluginHost.load(HostConfig())
    make = neuron_factory(
        host,
        "lif",
        {
            "tau": TAU,
            "decay_input": False,
            "v_threshold": THRESHOLD,
            "reset": "hard",
            "v_reset": 0.0,
            "detach_reset": True,
        },
        "fast_sigmoid",
        {"slope": 1.0},
    )
    # as the mlp plugin: synapses fed by spikes are SpikeLinear (no copy of their input kept)
    synapses = [copied(layers[:1])[0], *(spike_linear(layer) for layer in layers[1:])]
    stages = [Stage(synapse, make()) for synapse in synapses]

    def forward(x: Tensor) -> Tensor:
        h = x
        for stage in stages:
            h, _ = stage.forward_seq(h)
        return h

    return Net("snnarena", forward, nn.ModuleList(stages))


def spikingjelly_net(layers: Sequence[nn.Linear]) -> Net:
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    modules: list[nn.Module] = []
    for linear in copied(layers):
        modules.append(layer.SeqToANNContainer(linear))
        modules.append(
            neuron.LIFNode(
                tau=TAU,
                decay_input=False,
                v_threshold=THRESHOLD,
                v_reset=0.0,
                surrogate_function=surrogate.SoftSign(alpha=1.0),
                detach_reset=True,
                step_mode="m",
            )
        )
    net = nn.Sequential(*modules)

    def forward(x: Tensor) -> Tensor:
        functional.reset_net(net)
        out: Tensor = net(x)
        return out

    return Net("spikingjelly", forward, net)


def snntorch_net(layers: Sequence[nn.Linear]) -> Net:
    import snntorch
    from snntorch import surrogate

    linears = copied(layers)
    lifs = nn.ModuleList(
        snntorch.Leaky(
            beta=1.0 - 1.0 / TAU,
            threshold=THRESHOLD,
            spike_grad=surrogate.fast_sigmoid(slope=1.0),
            reset_mechanism="zero",
        )
        for _ in linears
    )
    module = nn.ModuleList([linears, lifs])

    def forward(x: Tensor) -> Tensor:
        mems = [lif.reset_mem() for lif in lifs]
        outputs = []
        for x_t in x.unbind(0):
            h = x_t
            for i, (linear, lif) in enumerate(zip(linears, lifs, strict=True)):
                h, mems[i] = lif(linear(h), mems[i])
            outputs.append(h)
        return torch.stack(outputs)

    return Net("snntorch", forward, module)


def norse_net(layers: Sequence[nn.Linear]) -> Net:
    from norse.torch import LIFBoxCell, LIFBoxParameters

    linears = copied(layers, scale=TAU)  # LIFBoxCell scales its input by dt/τ
    p = LIFBoxParameters(
        tau_mem_inv=torch.as_tensor(1.0 / TAU),
        v_leak=torch.as_tensor(0.0),
        v_th=torch.as_tensor(THRESHOLD),
        v_reset=torch.as_tensor(0.0),
        method="super",
        alpha=torch.as_tensor(1.0),
    )
    lifs = nn.ModuleList(LIFBoxCell(p, dt=1.0) for _ in linears)
    module = nn.ModuleList([linears, lifs])

    def forward(x: Tensor) -> Tensor:
        h = x
        for linear, lif in zip(linears, lifs, strict=True):
            state = None
            spikes = []
            for current in _over_rows(linear, h).unbind(0):
                z, state = lif(current, state)
                spikes.append(z)
            h = torch.stack(spikes)
        return h

    return Net("norse", forward, module)


PEERS: dict[str, Callable[[Sequence[nn.Linear]], Net]] = {
    "floor": floor_net,
    "snnarena": snnarena_net,
    "spikingjelly": spikingjelly_net,
    "snntorch": snntorch_net,
    "norse": norse_net,
}


def build_peers(names: Sequence[str], layers: Sequence[nn.Linear], device: str) -> tuple[list[Net], dict[str, str]]:
    """The networks of ``names`` on ``device``, and ``{name: why}`` for peers that cannot be built."""
    nets, missing = [], {}
    for name in names:
        try:
            net = PEERS[name](layers)
        except ImportError as err:
            missing[name] = f"not installed ({err.name or err})"
            continue
        net.module.to(device)
        nets.append(net)
    return nets, missing


# -- measuring ---------------------------------------------------------------------------------------


def make_batch(T: int, batch: int, device: str, seed: int) -> tuple[Tensor, Tensor]:
    """Bernoulli(0.2) input spikes ``[T, B, 784]`` and labels ``[B]``."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, batch, INPUTS, generator=g) < 0.2).float()
    y = torch.randint(0, CLASSES, (batch,), generator=g)
    return x.to(device), y.to(device)


def spike_check(nets: Sequence[Net], x: Tensor) -> tuple[str, float]:
    """One line comparing every peer's output spike counts with snnarena's (no grad), and the largest
    difference; the output firing rate of snnarena is shown too."""
    with torch.no_grad():
        outs = {net.name: net.forward(x) for net in nets if net.name != "floor"}
    if "snnarena" not in outs:
        return "spike check: snnarena not measured", 0.0
    ref = outs["snnarena"]
    diffs = {name: float((out - ref).abs().max()) for name, out in outs.items() if name != "snnarena"}
    worst = max(diffs.values(), default=0.0)
    parts = ", ".join(f"{name} {d:g}" for name, d in diffs.items())
    return (
        f"spike check (max |S_out − S_out(snnarena)| over T·B·10, same input): {parts or 'no peers'}; "
        f"output rate {float(ref.mean()):.3f}",
        worst,
    )


def train_step(net: Net, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    loss = F.cross_entropy(net.forward(x).sum(0), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed_step(net: Net, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, cuda: bool) -> float:
    """One training step's time in ms (CUDA events on CUDA)."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        train_step(net, optimizer, x, y)
        end.record()
        torch.cuda.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    train_step(net, optimizer, x, y)
    return 1e3 * (time.perf_counter() - t0)


def memory(net: Net, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, cuda: bool) -> tuple[int, float]:
    """Peak saved-for-backward bytes of one step, and its CUDA peak above what was allocated before."""
    cuda_bytes = float("nan")
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        train_step(net, optimizer, x, y)
        torch.cuda.synchronize()
        cuda_bytes = float(torch.cuda.max_memory_allocated() - base)
    with SavedTensorMeter(exclude=[*net.module.parameters(), x]) as meter:
        train_step(net, optimizer, x, y)
    return meter.peak_bytes, cuda_bytes


def measure(nets: Sequence[Net], x: Tensor, y: Tensor, warmup: int, repeats: int, lr: float) -> list[Result]:
    """Interleaved timing: each round runs one step of every net, the order rotating per round."""
    cuda = x.device.type == "cuda"
    optimizers = [torch.optim.SGD(net.module.parameters(), lr=lr) for net in nets]
    results = [Result(net.name) for net in nets]
    for net, opt, res in zip(nets, optimizers, results, strict=True):
        res.saved_bytes, res.cuda_bytes = memory(net, opt, x, y, cuda)
    for r in range(warmup + repeats):
        order = list(range(len(nets)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            ms = timed_step(nets[i], optimizers[i], x, y, cuda)
            if r >= warmup:
                results[i].times_ms.append(ms)
    return results


def table(results: Sequence[Result], cuda: bool) -> list[str]:
    """The printed rows: median ms, IQR-free spread (min–max), ratio to the fastest peer and to the floor."""
    measured = [r for r in results if not r.missing]
    floor = next((r.median_ms for r in measured if r.name == "floor"), float("nan"))
    peers = [r.median_ms for r in measured if r.name != "floor"]
    fastest = min(peers) if peers else float("nan")
    head = f"{'library':<13} {'ms/step':>9} {'min–max':>15} {'× fastest':>9} {'× floor':>8} {'saved MiB':>10}"
    head += f" {'cuda MiB':>9}" if cuda else ""
    lines = [head, "-" * len(head)]
    for r in results:
        if r.missing:
            lines.append(f"{r.name:<13} {r.missing}")
            continue
        spread = f"{min(r.times_ms):.1f}–{max(r.times_ms):.1f}"
        ratio = "" if r.name == "floor" else f"{r.median_ms / fastest:.2f}"
        line = (
            f"{r.name:<13} {r.median_ms:>9.1f} {spread:>15} {ratio:>9} {r.median_ms / floor:>8.2f} "
            f"{r.saved_bytes / 2**20:>10.1f}"
        )
        line += f" {r.cuda_bytes / 2**20:>9.1f}" if cuda else ""
        lines.append(line)
    return lines


def _size(text: str) -> tuple[int, int, int]:
    parts = [int(v) for v in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected T,B,H (three integers), got {text!r}")
    return parts[0], parts[1], parts[2]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sizes", type=_size, nargs="+", default=list(DEFAULT_SIZES), help="T,B,H triples")
    p.add_argument("--repeats", type=int, default=15, help="timed steps per library (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, among {','.join(PEERS)}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[tuple[int, int, int], list[Result]]:
    """Run the comparison, print one table per size; returns the results by ``(T, B, H)``."""
    args = parse(argv)
    default = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(default)


def _run(args: argparse.Namespace) -> dict[tuple[int, int, int], list[Result]]:
    names = [n for n in args.peers.split(",") if n]
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise SystemExit(f"--peers: unknown {', '.join(unknown)}; choose among {', '.join(PEERS)}")
    cuda = torch.device(args.device).type == "cuda"
    print(
        f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} thread(s); "
        f"median of {args.repeats} interleaved steps after {args.warmup} warm-up rounds"
    )
    out: dict[tuple[int, int, int], list[Result]] = {}
    for T, B, H in args.sizes:
        layers = initial_layers(H, args.seed)
        nets, missing = build_peers(names, layers, args.device)
        x, y = make_batch(T, B, args.device, args.seed + 1)
        print(f"\nLIF MLP {INPUTS}-{H}-{H}-{CLASSES} (spiking output, CE on spike counts, SGD), T={T}, B={B}")
        line, _ = spike_check(nets, x)
        print(line)
        results = measure(nets, x, y, args.warmup, args.repeats, args.lr)
        results += [Result(name, missing=why) for name, why in missing.items()]
        results.sort(key=lambda r: names.index(r.name))
        print("\n".join(table(results, cuda)))
        out[(T, B, H)] = results
    return out


if __name__ == "__main__":
    main()
