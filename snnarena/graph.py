"""Graph data on the host side: the graph, its normalised adjacency, a graph convolution, splits
and the full-batch :class:`GraphBundle` the graph tasks train on.

A graph task (:mod:`snnarena.task`: ``node_classification``, ``link_prediction``) runs on *one*
graph of ``N`` nodes whose nodes are the batch: a batch is ``x [T, N, F]`` (the node features
``u [N, F]`` coded over ``T`` steps) and the model's outputs are ``o [T, N, C]``. The graph the
model propagates over (the *message-passing* graph) is ``DataInfo.graph``.

* :class:`Graph` — ``edge_index [2, E]`` (an undirected graph stores each edge in both
  directions; no self-loops, no duplicates) and ``n_nodes``; :func:`undirected_graph` builds one
  from node pairs;
* :func:`normalized_adjacency` — ``Â = D^{-1/2} (A + I) D^{-1/2}`` (Kipf & Welling, 2017), sparse;
* :class:`GraphConv` — ``h ↦ Â h W + b``, affine in ``h``;
* :func:`node_split`, :func:`edge_split`, :func:`sample_negatives` — seeded splits of nodes and
  edges (held-out edges leave the message-passing graph) and non-edge sampling;
* :class:`GraphBundle` — the :class:`~snnarena.data.DataBundle` of one graph: every split is a
  single full batch (``batch_size`` is ignored);
* :class:`GraphDataset` — base of the graph dataset plugins: a ``target`` parameter picks the
  task, and :meth:`GraphDataset.bundle` splits nodes or edges into a :class:`GraphBundle`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import Tensor, nn

from snnarena.data import DataBundle, DataInfo, Dataset
from snnarena.params import Param
from snnarena.task import IGNORE_INDEX

GraphEncoding = Literal["direct", "rate"]
#: The encodings of node features over ``T`` steps.
GRAPH_ENCODINGS: tuple[str, ...] = ("direct", "rate")
#: Offsets of the seeds of the fixed generators of one bundle (held-out negatives, val/test coding).
_NEGATIVE_SEED, _VAL_SEED, _TEST_SEED = 8081, 8087, 8089


class Graph(NamedTuple):
    """A graph on nodes ``0 .. n_nodes−1``: ``edge_index [2, E]`` (int64) lists the directed
    message-passing edges ``(source, target)``; an undirected graph lists each edge both ways.
    Build undirected graphs with :func:`undirected_graph` (no self-loops, no duplicates)."""

    edge_index: Tensor
    n_nodes: int

    @property
    def n_edges(self) -> int:
        """``E``: the number of directed entries of ``edge_index`` (twice the undirected edges)."""
        return int(self.edge_index.shape[1])

    def pairs(self) -> Tensor:
        """The edges as unordered pairs ``[M, 2]``, rows ``(i, j)`` with ``i < j``, sorted (an edge
        listed in one or both directions counts once; ``M = E/2`` for an undirected graph)."""
        i, j = self.edge_index
        return _sorted_pairs(self.edge_index.T[i != j], self.n_nodes)


def _pair_keys(pairs: Tensor, n_nodes: int) -> Tensor:
    """One integer per unordered pair ``[P, 2]`` → ``[P]``: ``min·N + max``."""
    lo, hi = pairs.min(1).values, pairs.max(1).values
    return lo * n_nodes + hi


def _sorted_pairs(pairs: Tensor, n_nodes: int) -> Tensor:
    """Distinct unordered pairs ``[P, 2]`` as ``(i < j)`` rows sorted by ``(i, j)``."""
    keys = torch.unique(_pair_keys(pairs, n_nodes))
    return torch.stack([keys // n_nodes, keys % n_nodes], 1)


def undirected_graph(pairs: Tensor, n_nodes: int) -> Graph:
    """The undirected :class:`Graph` with the edges ``pairs [P, 2]`` (either orientation, repeats
    allowed): self-loops are dropped, each edge is listed once in each direction (``E = 2·P'``)."""
    pairs = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)
    if len(pairs) and (int(pairs.min()) < 0 or int(pairs.max()) >= n_nodes):
        raise ValueError(f"edge endpoints must be node indices in 0..{n_nodes - 1}")
    pairs = _sorted_pairs(pairs[pairs[:, 0] != pairs[:, 1]], n_nodes)
    edge_index = torch.cat([pairs, pairs.flip(1)]).T.contiguous()
    return Graph(edge_index, n_nodes)


def normalized_adjacency(graph: Graph, self_loops: bool = True) -> Tensor:
    """``Â = D^{-1/2} (A + I) D^{-1/2}`` ``[N, N]`` (without ``+ I`` when ``self_loops`` is false),
    ``D = diag(Σ_j (A + I)_{ij})``, as a coalesced float32 sparse COO tensor (rows of isolated nodes
    are zero without self-loops). Cast it to the dense operand's dtype at use (:func:`propagate`)."""
    n = graph.n_nodes
    index = graph.edge_index
    if self_loops:
        loops = torch.arange(n).expand(2, n)
        index = torch.cat([index, loops], 1)
    values = torch.ones(index.shape[1])
    degree = torch.zeros(n).index_add_(0, index[0], values)
    scale = degree.clamp(min=1e-12).rsqrt()
    values = scale[index[0]] * values * scale[index[1]]
    return torch.sparse_coo_tensor(index, values, (n, n), check_invariants=True).coalesce()


def propagate(adjacency: Tensor, h: Tensor) -> Tensor:
    """``Â h`` over the node axis for ``h [*, F]`` whose rows (all leading axes flattened) are
    ``k`` stacked copies of the graph's ``N`` nodes (row ``r`` is node ``r mod N`` of copy
    ``r div N``; e.g. ``[T, N, F]`` or ``[T·N, F]``) → the same shape. One sparse product for all
    copies; ``Â`` is cast to ``h``'s dtype and device."""
    n = adjacency.shape[0]
    features = h.shape[-1]
    rows = h.numel() // features if features else 0
    if features == 0 or rows % n:
        raise ValueError(
            f"graph propagation needs inputs whose rows are copies of the graph's {n} nodes; "
            f"got shape {list(h.shape)} ({rows} rows)"
        )
    k = rows // n
    a = adjacency.to(dtype=h.dtype, device=h.device)
    stacked = h.reshape(k, n, features).transpose(0, 1).reshape(n, k * features)
    out = torch.sparse.mm(a, stacked)
    return out.reshape(n, k, features).transpose(0, 1).reshape(h.shape)


class GraphConv(nn.Module):
    """Graph convolution ``h [*, F_in] ↦ Â h W + b`` ``[*, F_out]`` (Kipf & Welling, 2017).

    ``W`` is ``self.linear`` (an ``nn.Linear`` without bias), applied first; ``b`` starts at zero.
    ``Â`` (:func:`normalized_adjacency` of ``graph``) is kept as two ordinary (strided),
    non-persistent buffers, its indices ``adjacency_index [2, nnz]`` and values
    ``adjacency_values [nnz]``, so ``.to()`` and ``.double()`` move it, code that inspects buffers
    (finiteness checks, weight copies) needs no sparse support, and checkpoints do not store it;
    :attr:`adjacency` assembles the sparse matrix (no copy). The rows of ``h`` are copies of the
    graph's nodes (:func:`propagate`), so a stage may apply it to ``[T·N, F_in]``. The map is
    affine in ``h``.
    """

    adjacency_index: Tensor
    adjacency_values: Tensor
    bias: nn.Parameter | None

    def __init__(self, in_features: int, out_features: int, graph: Graph, bias: bool = True) -> None:
        super().__init__()
        self.n_nodes = graph.n_nodes
        self.linear = nn.Linear(in_features, out_features, bias=False)
        a = normalized_adjacency(graph)
        self.register_buffer("adjacency_index", a.indices(), persistent=False)
        self.register_buffer("adjacency_values", a.values(), persistent=False)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features))
        else:
            self.register_parameter("bias", None)

    @property
    def adjacency(self) -> Tensor:
        """``Â`` ``[N, N]`` as a coalesced sparse COO tensor of the buffers' dtype and device."""
        size = (self.n_nodes, self.n_nodes)
        return torch.sparse_coo_tensor(
            self.adjacency_index, self.adjacency_values, size, is_coalesced=True, check_invariants=False
        )

    def forward(self, h: Tensor) -> Tensor:
        out = propagate(self.adjacency, self.linear(h))
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"n_nodes={self.n_nodes}, bias={self.bias is not None}"


# -- splits ----------------------------------------------------------------------------------------


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0.0 < val_fraction < 1.0 and 0.0 < test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in (0, 1) "
            "and leave a training share (sum < 1)"
        )


def node_split(
    labels: Tensor,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    train_per_class: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted node indices ``(train, val, test)``, disjoint and stratified by class.

    Each class ``c`` of ``n_c`` nodes (``labels [N]``) gives ``round(n_c·val_fraction)`` nodes to
    validation and ``round(n_c·test_fraction)`` to test, keeping at least one for training; the
    rest train (only ``train_per_class`` of them, if given: the remaining nodes are unused). The
    nodes are drawn from ``seed`` alone.
    """
    _check_fractions(val_fraction, test_fraction)
    generator = torch.Generator().manual_seed(seed % 2**63)
    parts: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = min(round(len(members) * val_fraction), max(len(members) - 1, 0))
        n_test = min(round(len(members) * test_fraction), max(len(members) - 1 - n_val, 0))
        train = members[n_val + n_test :]
        if train_per_class is not None:
            train = train[:train_per_class]
        parts[0].append(train)
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
    train_idx, val_idx, test_idx = (torch.sort(torch.cat(p)).values for p in parts)
    return train_idx, val_idx, test_idx


class EdgeSplit(NamedTuple):
    """The edges of a graph split for link prediction: the message-passing ``graph`` holds the
    training edges only; ``train``, ``val`` and ``test`` are disjoint edge lists ``[P, 2]``."""

    graph: Graph
    train: Tensor
    val: Tensor
    test: Tensor


def edge_split(graph: Graph, val_fraction: float, test_fraction: float, seed: int) -> EdgeSplit:
    """Split the undirected edges of ``graph`` into train / val / test (``round(M·fraction)``
    held-out edges of the ``M``, drawn from ``seed``); the val and test edges are removed from
    the message-passing graph, so a model never propagates over an edge it is scored on."""
    _check_fractions(val_fraction, test_fraction)
    pairs = graph.pairs()
    m = len(pairs)
    n_val, n_test = round(m * val_fraction), round(m * test_fraction)
    if min(n_val, n_test, m - n_val - n_test) < 1:
        raise ValueError(
            f"cannot split {m} edges into train/val/test with val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}: every part needs at least one edge"
        )
    order = torch.randperm(m, generator=torch.Generator().manual_seed(seed % 2**63))
    shuffled = pairs[order]
    val, test, train = shuffled[:n_val], shuffled[n_val : n_val + n_test], shuffled[n_val + n_test :]
    return EdgeSplit(undirected_graph(train, graph.n_nodes), train, val, test)


def sample_negatives(graph: Graph, n: int, generator: torch.Generator) -> Tensor:
    """``n`` distinct node pairs ``[n, 2]`` (rows ``(i, j)``, ``i < j``) that are neither edges of
    ``graph`` nor self-loops, drawn uniformly with ``generator`` (by rejection)."""
    n_nodes = graph.n_nodes
    taken = _pair_keys(graph.pairs(), n_nodes)
    free = n_nodes * (n_nodes - 1) // 2 - len(taken)
    if n > free:
        raise ValueError(f"cannot sample {n} non-edges: the graph has only {free} node pairs without an edge")
    keys = torch.empty(0, dtype=torch.long)
    while len(keys) < n:
        draw = torch.randint(0, n_nodes, (2 * (n - len(keys)) + 16, 2), generator=generator)
        draw = draw[draw[:, 0] != draw[:, 1]]
        fresh = _pair_keys(draw, n_nodes)
        keys = _first_occurrences(torch.cat([keys, fresh[~torch.isin(fresh, taken)]]))
    keys = keys[:n]
    return torch.stack([keys // n_nodes, keys % n_nodes], 1)


def _first_occurrences(values: Tensor) -> Tensor:
    """The distinct entries of ``values [P]`` in the order they first occur."""
    unique, inverse = torch.unique(values, return_inverse=True)
    first = torch.full((len(unique),), len(values), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(values)), reduce="amin")
    return values[torch.sort(first).values]


def labelled_pairs(positives: Tensor, negatives: Tensor) -> Tensor:
    """Candidate rows ``(i, j, label)`` ``[P + Q, 3]``: ``positives [P, 2]`` labelled 1, then
    ``negatives [Q, 2]`` labelled 0 (the targets of ``link_prediction``)."""
    ones = torch.ones(len(positives), 1, dtype=torch.long)
    zeros = torch.zeros(len(negatives), 1, dtype=torch.long)
    return torch.cat([torch.cat([positives.long(), ones], 1), torch.cat([negatives.long(), zeros], 1)])


# -- bundle ------------------------------------------------------------------------------------------


class NodeTargets(NamedTuple):
    """``node_classification`` targets: class indices ``[N]`` per split, :data:`IGNORE_INDEX` on
    the nodes outside the split (:func:`node_targets` builds them from a split)."""

    train: Tensor
    val: Tensor
    test: Tensor


def node_targets(labels: Tensor, train: Tensor, val: Tensor, test: Tensor) -> NodeTargets:
    """:class:`NodeTargets` of ``labels [N]`` for the node index sets of a split."""

    def masked(index: Tensor) -> Tensor:
        y = torch.full_like(labels, IGNORE_INDEX, dtype=torch.long)
        y[index] = labels[index].long()
        return y

    return NodeTargets(masked(train), masked(val), masked(test))


class EdgeTargets(NamedTuple):
    """``link_prediction`` targets: the positive edges ``[P, 2]`` of each split (an
    :class:`EdgeSplit`'s ``train``, ``val``, ``test``); :class:`GraphBundle` adds the negatives."""

    train: Tensor
    val: Tensor
    test: Tensor


class GraphBundle(DataBundle):
    """One graph, full batch: node features ``u [N, F]``, the message-passing ``graph`` and the
    targets of each split; every split is ONE batch of the whole graph (``batch_size`` is ignored).

    Batches are ``(x [T, N, F], y)``; ``x`` codes ``u`` over ``T`` steps (``direct``: ``x[t] = u``;
    ``rate``: ``x[t] ~ Bernoulli(clamp(u, 0, 1))``, training batches drawn with the caller's
    generator, validation and test with generators fixed by ``seed``). With
    :class:`NodeTargets` the task is ``node_classification`` and ``y [N]`` is the split's targets;
    with :class:`EdgeTargets` it is ``link_prediction`` and ``y [P, 3]`` is the split's rows
    ``(i, j, label)``: its positive edges (label 1) and as many non-edges of the whole graph (all
    splits' edges; label 0), freshly drawn with the generator for every training batch and fixed
    (drawn from ``seed`` once, disjoint between validation and test) for validation and test.
    ``n_classes`` is the number of classes (node classification) or the node-embedding size ``D``
    whose inner products score the edges (link prediction). ``DataInfo.n_train``/``n_val``/``n_test``
    count the scored nodes or candidate edges of each split.
    """

    def __init__(
        self,
        features: Tensor,
        graph: Graph,
        targets: NodeTargets | EdgeTargets,
        *,
        T: int,
        n_classes: int,
        encoding: GraphEncoding,
        seed: int,
    ) -> None:
        if features.dim() != 2 or features.shape[0] != graph.n_nodes:
            raise ValueError(f"node features must be [N={graph.n_nodes}, F], got {list(features.shape)}")
        if encoding not in GRAPH_ENCODINGS:
            raise ValueError(f"graph data encodes node features as one of {GRAPH_ENCODINGS}, not {encoding!r}")
        self.features = features.float()
        self.graph = graph
        self.encoding = encoding
        self.seed = seed
        self.targets = targets
        if isinstance(targets, NodeTargets):
            task = "node_classification"
            self._fixed = {"val": targets.val, "test": targets.test}
            sizes = [int((y != IGNORE_INDEX).sum()) for y in targets]
        else:
            task = "link_prediction"
            self.known_edges = undirected_graph(
                torch.cat([graph.pairs(), targets.train, targets.val, targets.test]), graph.n_nodes
            )
            self._fixed = self._held_out_rows(targets)
            sizes = [2 * len(targets.train), len(self._fixed["val"]), len(self._fixed["test"])]
        self.info = DataInfo(
            (features.shape[1],), n_classes, T, sizes[0], sizes[2], task=task, n_val=sizes[1], graph=graph
        )

    def _held_out_rows(self, targets: EdgeTargets) -> dict[str, Tensor]:
        """Validation and test rows: the split's edges and as many fixed non-edges, disjoint."""
        generator = torch.Generator().manual_seed((self.seed + _NEGATIVE_SEED) % 2**63)
        n_val, n_test = len(targets.val), len(targets.test)
        negatives = sample_negatives(self.known_edges, n_val + n_test, generator)
        return {
            "val": labelled_pairs(targets.val, negatives[:n_val]),
            "test": labelled_pairs(targets.test, negatives[n_val:]),
        }

    def _encode(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Node features ``[N, F]`` → ``[T, N, F]`` (float); ``direct`` is a broadcast view (no copy
        per step: a large graph's batch costs its features once)."""
        T = self.info.T
        if self.encoding == "direct":
            return x.float().unsqueeze(0).expand(T, *x.shape)
        return torch.bernoulli(x.clamp(0.0, 1.0).unsqueeze(0).expand(T, *x.shape), generator=generator)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """The one training batch ``(x [T, N, F], y)``; ``batch_size`` is ignored (full batch).
        Link prediction draws the training negatives (and rate coding its spikes) with ``generator``."""
        x = self._encode(self.features, generator)
        if isinstance(self.targets, NodeTargets):
            yield x, self.targets.train
            return
        positives = self.targets.train
        yield x, labelled_pairs(positives, sample_negatives(self.known_edges, len(positives), generator))

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The one validation batch, the same on every call; ``batch_size`` is ignored."""
        return self._fixed_batch("val", _VAL_SEED)

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The one test batch, the same on every call; ``batch_size`` is ignored."""
        return self._fixed_batch("test", _TEST_SEED)

    def _fixed_batch(self, split: str, offset: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed((self.seed + offset) % 2**63)
        yield self._encode(self.features, generator), self._fixed[split]


# -- dataset plugins ---------------------------------------------------------------------------------

#: The task of each value of a graph dataset's ``target`` parameter.
GRAPH_TARGET_TASKS: Mapping[str, str] = MappingProxyType({"nodes": "node_classification", "links": "link_prediction"})


def graph_dataset_params(val_fraction: float, test_fraction: float) -> tuple[Param, ...]:
    """The parameters every :class:`GraphDataset` shares, with the given split defaults:
    ``target``, ``encoding``, ``embedding``, ``val_fraction``, ``test_fraction``."""
    return (
        Param(
            "target",
            "str",
            "nodes",
            "nodes: classify the nodes (node_classification); links: predict held-out edges (link_prediction)",
            choices=tuple(GRAPH_TARGET_TASKS),
        ),
        Param(
            "encoding",
            "str",
            "direct",
            "direct (node features as current at every step) or rate (Bernoulli spikes, features clamped to [0, 1])",
            choices=GRAPH_ENCODINGS,
        ),
        Param(
            "embedding",
            "int",
            16,
            "size D of the node outputs whose inner products score edges (target = links)",
            low=1,
        ),
        Param(
            "val_fraction",
            "float",
            val_fraction,
            "share of the nodes (of each class) or of the edges held out for validation",
            low=0.01,
            high=0.9,
        ),
        Param(
            "test_fraction",
            "float",
            test_fraction,
            "share of the nodes (of each class) or of the edges held out for testing",
            low=0.01,
            high=0.9,
        ),
    )


class GraphDataset(Dataset):
    """Base of the graph dataset plugins: the ``target`` parameter (:func:`graph_dataset_params`)
    picks the task, ``nodes`` → ``node_classification``, ``links`` → ``link_prediction``.

    A subclass builds its features, graph and node labels and returns :meth:`bundle`: for
    ``nodes`` the nodes are split (:func:`node_split`, stratified) and the model outputs the
    classes; for ``links`` the edges are split (:func:`edge_split`: held-out edges leave the
    message-passing graph) and the model outputs ``embedding`` values per node.
    """

    task: ClassVar[str] = "node_classification"

    @classmethod
    def task_for(cls, params: Mapping[str, Any]) -> str:
        return GRAPH_TARGET_TASKS[str(params.get("target", "nodes"))]

    def bundle(
        self, features: Tensor, graph: Graph, labels: Tensor, n_classes: int, *, T: int, seed: int
    ) -> GraphBundle:
        """The :class:`GraphBundle` of ``features [N, F]``, ``graph`` and ``labels [N]`` (classes
        ``0 .. n_classes−1``) for the dataset's ``target``, split with ``seed``."""
        p = self.params
        val_fraction, test_fraction = float(p["val_fraction"]), float(p["test_fraction"])
        targets: NodeTargets | EdgeTargets
        if p["target"] == "nodes":
            targets = node_targets(labels, *node_split(labels, val_fraction, test_fraction, seed))
            n_out = n_classes
        else:
            split = edge_split(graph, val_fraction, test_fraction, seed)
            graph, targets, n_out = split.graph, EdgeTargets(split.train, split.val, split.test), int(p["embedding"])
        return GraphBundle(features, graph, targets, T=T, n_classes=n_out, encoding=p["encoding"], seed=seed)
