"""``graph_energy``: the theoretical inference energy of a graph model, an *estimate* as in MSG's Table 3.

Operations of one forward pass over the test graph (all ``T`` steps, every node), priced per
operation with the 45 nm conventions the spiking-GNN papers use (Horowitz, ISSCC 2014):
``E = e_mac · MACs + e_ac · ACs`` with ``e_mac = 4.6 pJ`` and ``e_ac = 0.9 pJ`` by default.

* a graph convolution ``Â h W`` on ``h [N, F]`` per step: the feature transform costs
  ``nnz(h) · F_out`` operations — ACs when ``h`` is binary (spikes: "add the weight row"),
  MACs otherwise — and the aggregation over the graph ``nnz(Â) · F_out`` MACs;
* the readout ``Linear`` on ``h``: ``nnz(h) · C``, ACs for spikes, MACs otherwise;
* ``msg``'s manifold layer: ``N · d`` MACs per stage and per evaluation of the chain (the
  convention of the official code's ``calc_params``).

Counted with forward hooks on the model's modules (``GraphConv``, ``nn.Linear``, the readout);
neuron updates are not counted (as in the papers). It is a convention for comparing models, not a
measurement of any hardware.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from snnarena.columns import Column
from snnarena.graph import GraphConv
from snnarena.metric import CellContext, Metric
from snnarena.params import Param
from snnarena.task import GRAPH_TASKS

from .model import MSG


@dataclass
class OperationCount:
    """Multiply-accumulates and accumulates of one forward pass."""

    macs: float = 0.0
    acs: float = 0.0

    def add(self, inputs: Tensor, out_features: int) -> None:
        """``nnz(inputs) · out_features`` operations, ACs for binary inputs, MACs otherwise."""
        ops = float((inputs != 0).sum()) * out_features
        if bool(((inputs == 0) | (inputs == 1)).all()):
            self.acs += ops
        else:
            self.macs += ops


@contextmanager
def counting(model: nn.Module, count: OperationCount) -> Iterator[None]:
    """Count the synaptic operations of ``model``'s graph convolutions and linear layers inside the block."""

    def conv_hook(module: nn.Module, args: tuple[Any, ...], _: Tensor) -> None:
        assert isinstance(module, GraphConv)
        (h,) = args
        out = module.linear.out_features
        count.add(h, out)
        count.macs += float(module.adjacency_values.numel()) * out * (h.numel() // h.shape[-1] // module.n_nodes)

    def linear_hook(module: nn.Module, args: tuple[Any, ...], _: Tensor) -> None:
        assert isinstance(module, nn.Linear)
        count.add(args[0], module.out_features)

    handles = []
    for module in model.modules():
        if isinstance(module, GraphConv):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear) and not any(
            module is m.linear for m in model.modules() if isinstance(m, GraphConv)
        ):
            handles.append(module.register_forward_hook(linear_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class GraphEnergy(Metric):
    """Estimated inference energy (MACs · e_mac + ACs · e_ac) of a graph model on the test graph."""

    name = "graph_energy"
    tasks = GRAPH_TASKS
    PARAMS = (
        Param("e_mac", "float", 4.6, "energy of one multiply-accumulate, pJ (45 nm convention)", low=0.0),
        Param("e_ac", "float", 0.9, "energy of one accumulate, pJ (45 nm convention)", low=0.0),
    )
    columns = (
        Column(
            "energy_estimate_mj",
            False,
            "mJ",
            "count",
            "ESTIMATE of the inference energy over the test graph (all T steps): MACs·e_mac + ACs·e_ac, "
            "e_mac = 4.6 pJ, e_ac = 0.9 pJ by default (45 nm convention, not a measurement)",
        ),
        Column("inference_macs", False, "ops", "count", "multiply-accumulates of one pass over the test graph"),
        Column("inference_acs", False, "ops", "count", "accumulates (spike inputs) of one pass over the test graph"),
    )

    def compute(self, ctx: CellContext) -> dict[str, float]:
        count = OperationCount()
        model = ctx.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), counting(model, count):
                for x, _ in ctx.data.test_batches(1):
                    model.forward_seq(x.to(ctx.device))
                    if isinstance(model, MSG):
                        count.macs += model.manifold_macs(x.shape[0])
        finally:
            model.train(was_training)
        joules = (count.macs * self.params["e_mac"] + count.acs * self.params["e_ac"]) * 1e-12
        return {"energy_estimate_mj": joules * 1e3, "inference_macs": count.macs, "inference_acs": count.acs}
