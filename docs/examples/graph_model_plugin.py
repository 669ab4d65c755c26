# docs/examples/graph_model_plugin.py
"""A spiking graph network whose stages keep each node's own features (``skip_gcn``).

On one graph of ``N`` nodes (the batch), stage ``l`` mixes the neighbours and adds a per-node path::

    I_l[t] = Â S_{l−1}[t] W_l + S_{l−1}[t] V_l + b_l       [N, hidden[l]]     (S_0 = x[t] [N, F])
    S_l[t] = neuron_l(I_l[t])
    o[t]   = S_L[t] W_out + b_out                        [N, C]

with ``Â = D^{−1/2}(A + I)D^{−1/2}`` (:class:`snnarena.graph.GraphConv`). The synapse is affine in
its input, so the stages keep the feedforward contract and ``bptt``, ``tbptt`` and
``checkpointed_bptt`` train the model unchanged.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

import snnarena
from snnarena.data import DataInfo
from snnarena.graph import Graph, GraphConv
from snnarena.model import GraphModel, NeuronFactory, Stage
from snnarena.params import Param
from snnarena.registry import Register

__version__ = "1.0"


class SkipGraphConv(nn.Module):
    """``h [*, F_in] ↦ Â h W + h V + b`` ``[*, F_out]``: a graph convolution plus a per-node linear path."""

    def __init__(self, in_features: int, out_features: int, graph: Graph) -> None:
        super().__init__()
        self.neighbours = GraphConv(in_features, out_features, graph)  # Â h W + b
        self.own = nn.Linear(in_features, out_features, bias=False)  # h V

    def forward(self, h: Tensor) -> Tensor:
        return self.neighbours(h) + self.own(h)


class SkipGCN(GraphModel):
    """Spiking stages of :class:`SkipGraphConv` and a per-node linear readout."""

    name = "skip_gcn"
    PARAMS = (Param("hidden", "int_list", (16,), "widths of the hidden stages", low=1, min_len=1),)

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)  # sets self.graph from info.graph
        (width,) = info.input_shape
        for out in self.params["hidden"]:
            self.stages.append(Stage(SkipGraphConv(width, out, self.graph), make_neuron()))
            width = out
        self.readout = nn.Linear(width, info.n_classes)


@snnarena.hookimpl
def register_models(register: Register) -> None:
    register(SkipGCN)
