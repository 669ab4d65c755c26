"""``sbm``: a stochastic block model graph with class-mean node features (generated, no files).

``blocks × block_size`` nodes; node ``v`` belongs to block ``c(v) = v div block_size`` (its class).
Each pair of distinct nodes is an (undirected) edge independently with probability ``p_in`` within
a block and ``p_out`` across blocks. Node features ``u_v = μ_{c(v)} + σ ε_v`` ``[features]`` with
class means ``μ_c ~ N(0, I)`` and noise ``ε_v ~ N(0, I)``, ``σ = feature_noise`` (0: the features
alone give the class; large: only the graph does). Generation is ``O(N²)`` and fixed by the seed.

``target = "nodes"``: ``node_classification`` of the blocks (chance ``1/blocks``), nodes split
per class; ``target = "links"``: ``link_prediction`` of held-out edges (removed from the graph the
model sees) against as many sampled non-edges, node outputs of size ``embedding``
(:class:`snnarena.graph.GraphDataset`). One graph, full batch: ``x [T, N, features]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from snnarena.graph import GraphBundle, GraphDataset, graph_dataset_params, undirected_graph
from snnarena.params import Param

from ._common import STREAM_DATA, rng

#: Uniform draws per chunk of rows when sampling the edges (bounds the memory of a build).
_DRAWS_PER_CHUNK = 1 << 22


def sbm_edges(labels: np.ndarray, p_in: float, p_out: float, gen: np.random.Generator) -> np.ndarray:
    """Edges ``[M, 2]`` (rows ``(i, j)``, ``i < j``) of a stochastic block model over nodes with
    block ``labels [N]``: each pair is an edge with probability ``p_in`` (same block) or ``p_out``."""
    n = len(labels)
    columns = np.arange(n)
    chunk = max(1, _DRAWS_PER_CHUNK // max(n, 1))
    found = []
    for start in range(0, n, chunk):
        rows = columns[start : start + chunk]
        p = np.where(labels[rows, None] == labels[None, :], p_in, p_out)
        hit = (gen.random((len(rows), n)) < p) & (columns[None, :] > rows[:, None])
        a, b = np.nonzero(hit)
        found.append(np.stack([rows[a], b], 1))
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


class StochasticBlockModel(GraphDataset):
    """Stochastic block model: ``blocks`` communities, class-mean Gaussian node features."""

    name = "sbm"
    PARAMS = (
        Param("blocks", "int", 4, "number of blocks (classes)", low=2, high=1000),
        Param("block_size", "int", 50, "nodes per block", low=2, high=100_000),
        Param("p_in", "float", 0.1, "edge probability between two nodes of the same block", low=0.0, high=1.0),
        Param("p_out", "float", 0.01, "edge probability between nodes of different blocks", low=0.0, high=1.0),
        Param("features", "int", 16, "node feature dimension F", low=1, high=100_000),
        Param("feature_noise", "float", 2.0, "std of the Gaussian noise around the class-mean features", low=0.0),
        *graph_dataset_params(val_fraction=0.2, test_fraction=0.2),
    )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return int(params["features"])

    def build(self, T: int, seed: int) -> GraphBundle:
        p = self.params
        blocks, size, n_features = int(p["blocks"]), int(p["block_size"]), int(p["features"])
        labels = np.repeat(np.arange(blocks), size)
        graph_gen, feature_gen = rng(seed, STREAM_DATA).spawn(2)
        edges = sbm_edges(labels, float(p["p_in"]), float(p["p_out"]), graph_gen)
        means = feature_gen.standard_normal((blocks, n_features))
        features = means[labels] + float(p["feature_noise"]) * feature_gen.standard_normal((len(labels), n_features))
        graph = undirected_graph(torch.from_numpy(edges), len(labels))
        return self.bundle(
            torch.tensor(features, dtype=torch.float32), graph, torch.from_numpy(labels), blocks, T=T, seed=seed
        )
