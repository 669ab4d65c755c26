"""Real graph datasets in PyTorch Geometric's raw layout (amazon, coauthor, planetoid): tiny files
written in the real formats, loaded through the plugins; missing files named with their source;
the paper-scale suite validated and one training step on the tiny files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from snnarena.factory import build_dataset, build_method, build_model, neuron_factory
from snnarena.graph import GraphBundle
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.suite import parse_suite
from snnarena_plugins.datasets.pyg import Amazon, Coauthor, Planetoid

SUITES = Path(__file__).resolve().parents[1] / "suites"
N, F, CLASSES = 12, 6, 3


def ring_csr(n: int) -> sp.csr_matrix:
    rows = np.arange(n)
    return sp.csr_matrix((np.ones(n), (rows, (rows + 1) % n)), shape=(n, n))


def write_npz(path: Path, n: int = N, features: int = F) -> None:
    """An archive with the arrays ``torch_geometric.io.read_npz`` reads (Shchur et al.'s format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    adj = ring_csr(n)
    attr = sp.csr_matrix(np.eye(n, features))
    np.savez(
        path,
        adj_data=adj.data, adj_indices=adj.indices, adj_indptr=adj.indptr, adj_shape=adj.shape,
        attr_data=attr.data, attr_indices=attr.indices, attr_indptr=attr.indptr, attr_shape=attr.shape,
        labels=np.arange(n) % CLASSES,
    )  # fmt: skip


def write_planetoid(folder: Path, name: str, n_train: int = 3, n_test: int = 6) -> None:
    """The eight pickled/text ``ind.<name>.*`` files of a Planetoid dataset, as in the public release:
    scipy sparse features, one-hot labels, an adjacency dict and the test indices (``n_train + 507 +
    n_test`` nodes: PyG's reader takes the 500 nodes after the training block as its validation set)."""
    folder.mkdir(parents=True, exist_ok=True)
    n_all = n_train + 500 + 7  # allx: the train block, the 500 validation nodes PyG expects, 7 more
    n = n_all + n_test
    eye = np.eye(n, F)
    labels = np.eye(CLASSES)[np.arange(n) % CLASSES]
    test_index = np.arange(n_all, n)
    parts = {
        "x": sp.csr_matrix(eye[:n_train]), "tx": sp.csr_matrix(eye[n_all:]), "allx": sp.csr_matrix(eye[:n_all]),
        "y": labels[:n_train], "ty": labels[n_all:], "ally": labels[:n_all],
        "graph": {i: [(i + 1) % n, (i - 1) % n] for i in range(n)},
    }  # fmt: skip
    for part, value in parts.items():
        with open(folder / f"ind.{name}.{part}", "wb") as handle:
            pickle.dump(value, handle)
    (folder / f"ind.{name}.test.index").write_text("\n".join(map(str, test_index)) + "\n")


@pytest.mark.parametrize(
    ("cls", "which", "relative"),
    [
        (Amazon, "computers", "Computers/raw/amazon_electronics_computers.npz"),
        (Amazon, "photo", "Photo/raw/amazon_electronics_photo.npz"),
        (Coauthor, "cs", "CS/raw/ms_academic_cs.npz"),
        (Coauthor, "physics", "Physics/raw/ms_academic_phy.npz"),
    ],
)
def test_npz_datasets_load_pyg_raw_files(host, tmp_path, cls, which, relative):
    params = {"which": which, "root": str(tmp_path)}
    problems = cls.check_files({**params, "target": "nodes"})
    assert len(problems) == 1 and relative in problems[0] and "gnn-benchmark" in problems[0]
    write_npz(tmp_path / relative)
    assert cls.check_files(params) == []
    bundle = build_dataset(host, cls.name, 4, 0, params)
    assert isinstance(bundle, GraphBundle)
    assert bundle.info.input_shape == (F,) and bundle.info.n_classes == CLASSES and bundle.graph.n_nodes == N
    assert bundle.graph.n_edges == 2 * N  # the ring, undirected
    links = build_dataset(host, cls.name, 4, 0, {**params, "target": "links", "embedding": 4})
    assert links.info.task == "link_prediction"


def test_damaged_npz_is_named(tmp_path):
    path = tmp_path / "CS/raw/ms_academic_cs.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip")
    (problem,) = Coauthor.check_files({"which": "cs", "root": str(tmp_path)})
    assert str(path) in problem and "not an npz" in problem
    np.savez(path, labels=np.zeros(3))
    (problem,) = Coauthor.check_files({"which": "cs", "root": str(tmp_path)})
    assert "adj_data" in problem


@pytest.mark.parametrize("name", ["cora", "citeseer", "pubmed"])
def test_planetoid_loads_the_pickled_files(host, tmp_path, name):
    folder = tmp_path / Planetoid.FOLDERS[name][0] / "raw"
    params = {"which": name, "root": str(tmp_path)}
    (problem,) = Planetoid.check_files(params)
    assert f"ind.{name}.x" in problem and "kimiyoung/planetoid" in problem
    write_planetoid(folder, name)
    assert Planetoid.check_files(params) == []
    bundle = build_dataset(host, "planetoid", 4, 0, {**params, "val_fraction": 0.2, "test_fraction": 0.3})
    assert bundle.graph.n_nodes == 3 + 507 + 6 and bundle.info.input_shape == (F,) and bundle.info.n_classes == CLASSES


def test_root_defaults_to_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SNNARENA_DATA", str(tmp_path))
    (problem,) = Amazon.check_files({"which": "photo", "root": None})
    assert str(tmp_path / "Photo" / "raw") in problem


def test_paper_suite_validates_and_trains_one_step_on_tiny_files(host, tmp_path, monkeypatch):
    monkeypatch.setenv("SNNARENA_DATA", str(tmp_path))
    text = (SUITES / "graphs-paper.toml").read_text()
    with pytest.raises(Exception, match="amazon_electronics_computers.npz"):
        parse_suite(text, host, "graphs-paper.toml")
    for relative in ("Computers/raw/amazon_electronics_computers.npz", "Photo/raw/amazon_electronics_photo.npz",
                     "CS/raw/ms_academic_cs.npz", "Physics/raw/ms_academic_phy.npz"):  # fmt: skip
        write_npz(tmp_path / relative)
    suite = parse_suite(text, host, "graphs-paper.toml")
    assert suite.name == "graphs-paper"
    data = build_dataset(host, "coauthor", 5, 0, {"which": "physics"})
    for model_name, method_name, params in (("msg", "dvm", {"manifold": "lorentz"}), ("spiking_gcn", "bptt", {})):
        torch.manual_seed(0)
        model = build_model(host, model_name, data.info, neuron_factory(host, "if", {}, "atan"), params)
        method = build_method(host, method_name)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        x, y = next(data.train_batches(1, torch.Generator().manual_seed(0)))
        value = method.train_step(
            model, x, y, SequenceLoss("rate", data.info.task), optimizer, PhaseClock(enabled=False)
        )
        assert np.isfinite(value)
