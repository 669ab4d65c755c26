"""The plugin author's guide (docs/plugins.md) and its example plugins (docs/examples/) stay true.

Every example file is loaded the way ``--plugins-dir`` loads it, used in a one-cell suite that runs
to ``done``, and checked against what the guide says it does; every code block of the guide that
names an example file must equal that file, so the guide cannot go stale.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from snnarena.data import DataBundle
from snnarena.factory import build_dataset, build_surrogate
from snnarena.host import HostConfig, PluginHost
from snnarena.params import ParamError
from snnarena.runner import run_suite
from snnarena.suite import SuiteError, load_suite, parse_suite

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
EXAMPLES = ROOT / "docs" / "examples"

#: kind → (example file stem, the name it registers)
EXAMPLE_PLUGINS: dict[str, tuple[str, str]] = {
    "neuron": ("neuron_plugin", "alif"),
    "surrogate": ("surrogate_plugin", "gaussian"),
    "model": ("model_plugin", "conv1d"),
    "dataset": ("dataset_plugin", "sines"),
    "method": ("method_plugin", "tail_bptt"),
    "metric": ("metric_plugin", "calibration"),
}

#: A one-cell suite of built-ins; each test swaps in one example plugin.
BASE_CELL: dict[str, str] = {
    "method": 'name = "bptt"',
    "model": 'name = "mlp"\nparams = { hidden = [8] }',
    "neuron": "lif",
    "surrogate": "atan",
    "dataset": 'name = "digits"',
    "metrics": "[]",
}
EXAMPLE_CELL: dict[str, dict[str, str]] = {
    "neuron": {"neuron": "alif"},
    "surrogate": {"surrogate": "gaussian"},
    "model": {"model": 'name = "conv1d"\nparams = { channels = [4], fc = 8 }'},
    "dataset": {"dataset": 'name = "sines"\nparams = { n_train = 64, n_test = 32 }'},
    "method": {"method": 'name = "tail_bptt"\nparams = { K = 2 }'},
    "metric": {"metrics": '["calibration"]'},
}


def one_cell_suite(kind: str) -> str:
    cell = {**BASE_CELL, **EXAMPLE_CELL[kind]}
    return f"""
name = "docs-{kind}"
metrics = {cell["metrics"]}
[train]
steps = 2
batch_size = 16
[grid]
T = [4]
[[methods]]
{cell["method"]}
[[models]]
{cell["model"]}
neuron = {{ name = "{cell["neuron"]}", params = {{ v_threshold = 0.3 }}, surrogate = "{cell["surrogate"]}" }}
[[datasets]]
{cell["dataset"]}
"""


@pytest.fixture(scope="module")
def examples_host() -> PluginHost:
    """The built-in plugins plus docs/examples/, loaded as ``--plugins-dir docs/examples`` does."""
    return PluginHost.load(HostConfig(plugins_dirs=(str(EXAMPLES),)))


def plugins_used(row: Any) -> set[str]:
    """The plugin names a result row's ``plugin_versions`` provenance mentions."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("plugin"), str):
                found.add(value["plugin"])
            for item in value.values():
                walk(item)

    walk(json.loads(row["plugin_versions"]))
    return found


# -- the guide ----------------------------------------------------------------------------------
def file_blocks(text: str) -> list[tuple[str, str]]:
    """``(path, code)`` of every fenced block whose first line is a comment naming a file."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    out = []
    for block in blocks:
        match = re.match(r"# (docs/examples/\S+)\n", block)
        if match:
            out.append((match.group(1), block))
    return out


def test_guide_quotes_every_example_file_verbatim():
    blocks = file_blocks(GUIDE.read_text())
    quoted = [path for path, _ in blocks]
    files = sorted(str(p.relative_to(ROOT)) for p in EXAMPLES.rglob("*") if p.suffix in (".py", ".toml"))
    assert sorted(quoted) == files, "each example file must be quoted exactly once in docs/plugins.md"
    for path, code in blocks:
        assert code == (ROOT / path).read_text(), f"docs/plugins.md's copy of {path} differs from the file"


def test_file_blocks_finds_marked_blocks_only():
    text = "x\n```python\n# docs/examples/a.py\nprint(1)\n```\n```python\nprint(2)\n```\n"
    assert file_blocks(text) == [("docs/examples/a.py", "# docs/examples/a.py\nprint(1)\n")]


# -- loading ------------------------------------------------------------------------------------
def test_examples_load_from_a_plugins_dir_without_failures_or_warnings(examples_host):
    assert examples_host.failures == []
    assert examples_host.warnings == []
    for kind, (stem, name) in EXAMPLE_PLUGINS.items():
        entry = examples_host.get(kind, name)
        assert (entry.plugin, entry.distribution, entry.version) == (f"local:{stem}", "local", "1.0")
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(stem for stem, _ in EXAMPLE_PLUGINS.values())


# -- each example in a suite --------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(EXAMPLE_PLUGINS))
def test_example_runs_in_a_one_cell_suite(examples_host, tmp_path, kind):
    suite = parse_suite(one_cell_suite(kind), examples_host, f"docs-{kind}.toml")
    assert len(suite.cells) == 1
    outcome = run_suite(suite, examples_host, results_root=tmp_path)
    row = outcome.results.iloc[0]
    assert row["status"] == "done", row["reason"]
    assert f"local:{EXAMPLE_PLUGINS[kind][0]}" in plugins_used(row)
    if kind == "metric":
        assert row["metric_errors"] == ""
        assert 0.0 <= row["ece"] <= 1.0 and 0.0 < row["mean_confidence"] <= 1.0


def test_example_suite_of_the_guide_runs(examples_host, tmp_path):
    suite = load_suite(str(EXAMPLES / "examples.toml"), examples_host)
    outcome = run_suite(suite, examples_host, results_root=tmp_path)
    row = outcome.results.iloc[0]
    assert row["status"] == "done", row["reason"]
    assert row["spike_rate"] > 0  # the example network is alive
    assert math.isfinite(row["grad_cosine_bptt"]) and math.isfinite(row["ece"])
    assert {f"local:{stem}" for stem, _ in EXAMPLE_PLUGINS.values()} <= plugins_used(row)


# -- what the guide says each example does ------------------------------------------------------
def load_example_test_module() -> ModuleType:
    path = EXAMPLES / "tests" / "test_method_plugin.py"
    spec = importlib.util.spec_from_file_location("docs_example_method_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_method_example_passes_its_conformance_tests(examples_host):
    tests = load_example_test_module()
    tests.test_tail_bptt_conforms(examples_host)
    tests.test_tail_bptt_declines_the_rate_loss(examples_host)


def test_neuron_example_threshold_adapts_after_a_spike(examples_host):
    neuron = examples_host.get("neuron", "alif").obj(build_surrogate(examples_host, "atan"), beta=0.5, tau=2.0)
    x = torch.ones(1, 1)
    state = neuron.init_state(x)
    first, state = neuron.step(x, state)  # H = 1 ≥ θ = 1: spike; V = 0, A = 1
    second, state = neuron.step(x, state)  # H = 1 < θ = 1.5: silent
    assert (first.item(), second.item()) == (1.0, 0.0)
    assert neuron.leak == 0.5


def test_surrogate_example_backward_is_the_derivative_of_its_primitive(examples_host):
    surrogate = build_surrogate(examples_host, "gaussian", {"sigma": 0.5})
    x = torch.linspace(-3, 3, 601, dtype=torch.float64, requires_grad=True)
    surrogate(x).sum().backward()
    p = x.detach().clone().requires_grad_(True)
    surrogate.primitive(p).sum().backward()
    torch.testing.assert_close(x.grad, p.grad)
    assert surrogate(torch.tensor([-1e-9, 0.0])).tolist() == [0.0, 1.0]


def test_dataset_example_is_deterministic_and_shaped_as_documented(examples_host):
    params = {"n_train": 20, "n_test": 10, "channels": 3, "n_classes": 5}
    a: DataBundle = build_dataset(examples_host, "sines", 6, 7, params)
    b: DataBundle = build_dataset(examples_host, "sines", 6, 7, params)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert (a.info.input_shape, a.info.n_classes, a.info.n_train) == ((3,), 5, 20)
    x, y = next(a.test_batches(4))
    assert x.shape == (6, 4, 3) and y.shape == (4,) and int(y.max()) < 5


def test_dataset_example_refuses_an_empty_frequency_range(examples_host):
    with pytest.raises(ParamError, match="f_max"):
        examples_host.get("dataset", "sines").obj(f_min=3.0, f_max=2.0)
    text = one_cell_suite("dataset").replace("n_test = 32", "n_test = 32, f_min = 3.0, f_max = 2.0")
    with pytest.raises(SuiteError, match="f_max"):
        parse_suite(text, examples_host, "bad.toml")
