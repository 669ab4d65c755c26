"""``karate``: Zachary's karate club (via networkx, no download).

34 members of a university karate club and the 78 friendships between them (Zachary, 1977);
the club split in two, and each member's side (``Mr. Hi`` → class 0, ``Officer`` → class 1) is
the label. Node features are the one-hot node identity ``[34]`` (a model tells nodes apart only
by its weights, so labels spread through the graph).

``target = "nodes"``: ``node_classification`` of the two factions (nodes split per class);
``target = "links"``: ``link_prediction`` of held-out friendships (removed from the graph the
model sees) against as many sampled non-edges, node outputs of size ``embedding``
(:class:`snnarena.graph.GraphDataset`). One graph, full batch: ``x [T, 34, 34]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from snnarena.graph import GraphBundle, GraphDataset, graph_dataset_params, undirected_graph

N_MEMBERS = 34
#: The two factions, in class order.
CLUBS = ("Mr. Hi", "Officer")


def karate_club() -> tuple[torch.Tensor, torch.Tensor]:
    """The friendships ``[78, 2]`` and the faction of each member ``[34]`` (class indices)."""
    import networkx

    g = networkx.karate_club_graph()
    edges = torch.tensor(list(g.edges()), dtype=torch.long)
    labels = torch.tensor([CLUBS.index(g.nodes[v]["club"]) for v in range(N_MEMBERS)], dtype=torch.long)
    return edges, labels


class KarateClub(GraphDataset):
    """Zachary's karate club: 34 nodes, 78 edges, two factions; one-hot identity features."""

    name = "karate"
    PARAMS = graph_dataset_params(val_fraction=0.2, test_fraction=0.3)

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return N_MEMBERS

    def build(self, T: int, seed: int) -> GraphBundle:
        edges, labels = karate_club()
        graph = undirected_graph(edges, N_MEMBERS)
        return self.bundle(torch.eye(N_MEMBERS), graph, labels, len(CLUBS), T=T, seed=seed)
