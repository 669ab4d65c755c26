"""Real graph datasets read from PyTorch Geometric's on-disk layout (never downloaded).

* ``amazon`` (``which = computers | photo``): Amazon co-purchase graphs (Shchur et al., 2018),
  ``<root>/Computers/raw/amazon_electronics_computers.npz``, ``<root>/Photo/raw/amazon_electronics_photo.npz``;
* ``coauthor`` (``which = cs | physics``): Microsoft Academic co-authorship graphs,
  ``<root>/CS/raw/ms_academic_cs.npz``, ``<root>/Physics/raw/ms_academic_phy.npz``;
* ``planetoid`` (``which = cora | citeseer | pubmed``): citation graphs (Yang et al., 2016),
  ``<root>/<Name>/raw/ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}``.

These are the folders ``torch_geometric.datasets.Amazon/Coauthor/Planetoid(root, name)`` write, so
a root PyG already filled works as is. ``root`` defaults to ``$SNNARENA_DATA``, else
``~/.snnarena/data``. The raw files are parsed by PyG's own readers (``torch_geometric.io.read_npz``:
binary bag-of-words features, undirected edges without self-loops; ``read_planetoid_data``), so
``torch_geometric`` (the ``graph`` extra) is needed to build, not to validate: :meth:`check_files`
only looks at names, sizes and the npz key lists. Nodes are split at random per class
(``val_fraction``/``test_fraction``, :class:`snnarena.graph.GraphDataset`; Planetoid's public
20-per-class split is not used); ``target = "links"`` predicts held-out edges.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from snnarena.data import DEFAULT_DATA_ROOT, data_root
from snnarena.extras import import_extra
from snnarena.graph import GraphBundle, GraphDataset, graph_dataset_params, undirected_graph
from snnarena.params import Param

#: Keys of the npz archives that ``torch_geometric.io.read_npz`` reads.
NPZ_KEYS: tuple[str, ...] = (
    "adj_data", "adj_indices", "adj_indptr", "adj_shape",
    "attr_data", "attr_indices", "attr_indptr", "attr_shape", "labels",
)  # fmt: skip
#: The eight files of a Planetoid dataset, ``ind.<name>.<part>``.
PLANETOID_PARTS: tuple[str, ...] = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
NPZ_SOURCE = "https://github.com/shchur/gnn-benchmark/raw/master/data/npz/"
PLANETOID_SOURCE = "https://github.com/kimiyoung/planetoid/raw/master/data/"


def load_pyg_io() -> ModuleType:
    """``torch_geometric.io``, or an :class:`~snnarena.extras.ExtraMissing` naming the ``graph`` extra."""
    return import_extra("torch_geometric.io", extra="graph", needed_for="reading PyTorch Geometric datasets")


def _root_param() -> Param:
    return Param(
        "root",
        "str",
        None,
        f"data root in PyG's layout (default: $SNNARENA_DATA, else {DEFAULT_DATA_ROOT})",
        nullable=True,
    )


def npz_problems(dataset: str, path: Path, how: str) -> list[str]:
    """Problems of one npz archive: missing, not a zip archive, or without a key PyG reads."""
    if not path.is_file():
        return [f"{dataset}: {path} not found (this dataset never downloads). {how}"]
    if not zipfile.is_zipfile(path):
        return [f"{dataset}: {path} is not an npz (zip) archive; delete it and download it again. {how}"]
    with zipfile.ZipFile(path) as archive:
        present = {name.removesuffix(".npy") for name in archive.namelist()}
    missing = [key for key in NPZ_KEYS if key not in present]
    if missing:
        return [f"{dataset}: {path} lacks the arrays {', '.join(missing)}; is it the right file? {how}"]
    return []


class _NpzGraph(GraphDataset):
    """A graph stored as one npz archive (Shchur et al.'s format)."""

    #: ``which`` → (folder, file name, node features F).
    FILES: ClassVar[Mapping[str, tuple[str, str, int]]] = {}

    @classmethod
    def path(cls, params: Mapping[str, Any]) -> Path:
        folder, file, _ = cls.FILES[str(params["which"])]
        return data_root(params.get("root")) / folder / "raw" / file

    @classmethod
    def how_to_get(cls, params: Mapping[str, Any]) -> str:
        folder, file, _ = cls.FILES[str(params["which"])]
        return (
            f"Put {file} from {NPZ_SOURCE}{file} into <root>/{folder}/raw/ (or run torch_geometric.datasets."
            f"{cls.__name__}(root, {folder!r}) on a machine with internet access and copy <root>)"
        )

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return cls.FILES[str(params["which"])][2]

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> list[str]:
        return npz_problems(f"{cls.name}[{params['which']}]", cls.path(params), cls.how_to_get(params))

    def build(self, T: int, seed: int) -> GraphBundle:
        data = load_pyg_io().read_npz(str(self.path(self.params)))
        return _bundle(self, data, T, seed)


def _bundle(dataset: GraphDataset, data: Any, T: int, seed: int) -> GraphBundle:
    """The :class:`GraphBundle` of a PyG ``Data`` (``x``, ``edge_index``, ``y``)."""
    labels = data.y.long()
    graph = undirected_graph(data.edge_index.T, int(labels.shape[0]))
    n_classes = int(labels.max()) + 1
    return dataset.bundle(data.x.float(), graph, labels, n_classes, T=T, seed=seed)


class Amazon(_NpzGraph):
    """Amazon Computers (13 752 nodes, 10 classes) or Photo (7 650 nodes, 8 classes)."""

    name = "amazon"
    FILES = {
        "computers": ("Computers", "amazon_electronics_computers.npz", 767),
        "photo": ("Photo", "amazon_electronics_photo.npz", 745),
    }
    PARAMS = (
        Param("which", "str", "computers", "computers or photo", choices=tuple(FILES)),
        _root_param(),
        *graph_dataset_params(val_fraction=0.1, test_fraction=0.2),
    )


class Coauthor(_NpzGraph):
    """Coauthor CS (18 333 nodes, 15 classes) or Physics (34 493 nodes, 5 classes)."""

    name = "coauthor"
    FILES = {
        "cs": ("CS", "ms_academic_cs.npz", 6805),
        "physics": ("Physics", "ms_academic_phy.npz", 8415),
    }
    PARAMS = (
        Param("which", "str", "cs", "cs or physics", choices=tuple(FILES)),
        _root_param(),
        *graph_dataset_params(val_fraction=0.1, test_fraction=0.2),
    )


class Planetoid(GraphDataset):
    """Planetoid citation graphs: Cora, CiteSeer or PubMed, from the ``ind.<name>.*`` files."""

    name = "planetoid"
    #: ``which`` → (folder as PyG names it, node features F).
    FOLDERS: ClassVar[Mapping[str, tuple[str, int]]] = {
        "cora": ("Cora", 1433),
        "citeseer": ("CiteSeer", 3703),
        "pubmed": ("PubMed", 500),
    }
    PARAMS = (
        Param("which", "str", "cora", "cora, citeseer or pubmed", choices=tuple(FOLDERS)),
        _root_param(),
        *graph_dataset_params(val_fraction=0.2, test_fraction=0.4),
    )

    @classmethod
    def raw_dir(cls, params: Mapping[str, Any]) -> Path:
        return data_root(params.get("root")) / cls.FOLDERS[str(params["which"])][0] / "raw"

    @classmethod
    def input_size(cls, params: Mapping[str, Any]) -> int:
        return cls.FOLDERS[str(params["which"])][1]

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> list[str]:
        which = str(params["which"])
        folder = cls.raw_dir(params)
        missing = [f"ind.{which}.{part}" for part in PLANETOID_PARTS if not (folder / f"ind.{which}.{part}").is_file()]
        empty = [
            f"ind.{which}.{part}"
            for part in PLANETOID_PARTS
            if (folder / f"ind.{which}.{part}").is_file() and (folder / f"ind.{which}.{part}").stat().st_size == 0
        ]
        how = (
            f"Put the files from {PLANETOID_SOURCE} into <root>/{cls.FOLDERS[which][0]}/raw/ (or run "
            f"torch_geometric.datasets.Planetoid(root, {which!r}) on a machine with internet access and copy <root>)"
        )
        if missing:
            return [
                f"planetoid[{which}]: {', '.join(missing)} not found in {folder} (this dataset never downloads). {how}"
            ]
        if empty:
            return [
                f"planetoid[{which}]: {', '.join(empty)} in {folder} are empty; delete them and download again. {how}"
            ]
        return []

    def build(self, T: int, seed: int) -> GraphBundle:
        data = load_pyg_io().read_planetoid_data(str(self.raw_dir(self.params)), str(self.params["which"]))
        return _bundle(self, data, T, seed)
