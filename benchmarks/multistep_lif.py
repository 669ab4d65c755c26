"""The hand-written multi-step LIF path (``snnarena.multistep``) against autograd through ``step``.

One BPTT step (forward + backward, per-step loss) of a LIF MLP ``784-H-H-10`` over ``T`` steps and
``B`` samples, with the fused path on and off (``snnarena.multistep.set_fused``), next to the
*floor*: the model's three ``Linear`` layers run forward and backward on all ``T·B`` rows at once.
Times are medians of repeated steps, taken in turns; on the CPU they are the thread's CPU time
(one thread), so other processes on a shared machine inflate them less. ``saved MiB`` is what
autograd holds for backward (``SavedTensorMeter``, parameters excluded). The ``mlp``'s synapses fed
by spikes are ``SpikeLinear`` (no copy of the spikes kept for the weight gradients);
``--plain-linear`` makes them ``nn.Linear`` (a float copy each) to show what that saves.

    python benchmarks/multistep_lif.py [--T 100 --batch 32 --hidden 256 --reset soft --device cpu]
    python benchmarks/multistep_lif.py --plain-linear
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from snnarena.data import DataInfo
from snnarena.factory import build_model, neuron_factory
from snnarena.host import HostConfig, PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import SavedTensorMeter
from snnarena.model import SpikingModel
from snnarena.multistep import SpikeLinear, set_fused


def timer(device: str) -> Callable[[], float]:
    if device == "cpu":
        return time.thread_time

    def synchronised() -> float:
        torch.cuda.synchronize()
        return time.perf_counter()

    return synchronised


def use_plain_linear(model: SpikingModel) -> None:
    """Swap the ``SpikeLinear`` synapses after the first stage, and the readout, for ``nn.Linear``."""
    owners = [(stage, "synapse") for stage in list(model.stages)[1:]] + [(model, "readout")]
    for owner, name in owners:
        old = getattr(owner, name)
        assert isinstance(old, SpikeLinear), f"{name}: expected the mlp's SpikeLinear, got {type(old).__name__}"
        new = nn.Linear(old.in_features, old.out_features, bias=old.bias is not None)
        new.load_state_dict(old.state_dict())
        setattr(owner, name, new.to(old.weight.device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--reset", choices=("soft", "hard"), default="soft")
    parser.add_argument("--surrogate", default="atan")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plain-linear", action="store_true", help="hidden synapses and readout as nn.Linear")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    T, B, H, dev = args.T, args.batch, args.hidden, args.device
    host = PluginHost.load(HostConfig())
    info = DataInfo((784,), 10, T, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", {"reset": args.reset}, args.surrogate)
    model: SpikingModel = build_model(host, "mlp", info, make, {"hidden": [H, H]}).to(dev)
    if args.plain_linear:
        use_plain_linear(model)
    layers = [nn.Linear(784, H), nn.Linear(H, H), nn.Linear(H, 10)]
    floor_net = nn.Sequential(*layers).to(dev)
    x = (torch.rand(T, B, 784, device=dev) < 0.2).float()
    y = torch.randint(0, 10, (B,), device=dev)
    loss = SequenceLoss("per_step")
    clock = timer(dev)

    def bptt(fused: bool) -> float:
        set_fused(model, fused)
        model.zero_grad(set_to_none=True)
        start = clock()
        loss.full(model.forward_seq(x).logits, y).backward()
        return clock() - start

    def floor() -> float:
        floor_net.zero_grad(set_to_none=True)
        start = clock()
        floor_net(x.flatten(0, 1)).sum().backward()
        return clock() - start

    runs: dict[str, Callable[[], float]] = {"floor": floor, "fused": lambda: bptt(True), "plain": lambda: bptt(False)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.repeats + 3):
        for name, run in runs.items():
            elapsed = run()
            if i >= 3:
                times[name].append(elapsed)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"LIF MLP 784-{H}-{H}-10, T={T}, B={B}, reset={args.reset}, {args.surrogate}, {dev}")
    for name, ms in medians.items():
        saved = ""
        if name != "floor":
            set_fused(model, name == "fused")
            with SavedTensorMeter(exclude=list(model.parameters())) as meter:
                out = loss.full(model.forward_seq(x).logits, y)
            del out
            saved = f"  saved {meter.peak_bytes / 2**20:7.2f} MiB"
        print(f"{name:6s} {ms:8.2f} ms  {ms / medians['floor']:5.2f}x floor{saved}")
    print(f"fused path: {medians['plain'] / medians['fused']:.2f}x faster than the plain path")


if __name__ == "__main__":
    main()
