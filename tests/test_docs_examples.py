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

import snnarena
from snnarena.data import DataBundle, DataInfo
from snnarena.factory import build_dataset, build_model, build_surrogate, neuron_factory
from snnarena.host import HostConfig, PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.params import ParamError
from snnarena.reference import bptt_accumulate
from snnarena.registry import Kind
from snnarena.runner import run_suite
from snnarena.suite import SuiteError, load_suite, parse_suite
from snnarena.task import IGNORE_INDEX

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
EXAMPLES = ROOT / "docs" / "examples"

#: example file stem → (kind, the name it registers)
EXAMPLE_PLUGINS: dict[str, tuple[Kind, str]] = {
    "neuron_plugin": ("neuron", "simple_alif"),
    "surrogate_plugin": ("surrogate", "gaussian"),
    "model_plugin": ("model", "conv1d"),
    "recurrent_model_plugin": ("model", "sparse_rsnn"),
    "dataset_plugin": ("dataset", "sines"),
    "per_step_dataset_plugin": ("dataset", "delayed_echo"),
    "method_plugin": ("method", "tail_bptt"),
    "online_method_plugin": ("method", "readout_online"),
    "metric_plugin": ("metric", "calibration"),
    "convergent_model_plugin": ("model", "skip_hopfield"),
    "graph_model_plugin": ("model", "skip_gcn"),
    "executor_plugin": ("executor", "futures"),
}

#: Examples that examples.toml leaves out: its example methods train feedforward models only, and
#: its metric (calibration) scores sequence classification only.
#: The convergent and graph models take other tasks (static and graph data) than the suite's dataset;
#: the executor is a run-level choice, tested on its own.
NOT_IN_EXAMPLE_SUITE = frozenset(
    {
        "recurrent_model_plugin",
        "per_step_dataset_plugin",
        "convergent_model_plugin",
        "graph_model_plugin",
        "executor_plugin",
    }
)

#: A one-cell suite of built-ins; each test swaps in one example plugin.
BASE_CELL: dict[str, str] = {
    "method": 'name = "bptt"',
    "model": 'name = "mlp"\nparams = { hidden = [8] }',
    "neuron": "lif",
    "surrogate": "atan",
    "dataset": 'name = "digits"',
    "metrics": "[]",
    "train": "",
    "executor": "",
}
#: example file stem → the parts of :data:`BASE_CELL` it replaces
EXAMPLE_CELL: dict[str, dict[str, str]] = {
    "neuron_plugin": {"neuron": "simple_alif"},
    "surrogate_plugin": {"surrogate": "gaussian"},
    "model_plugin": {"model": 'name = "conv1d"\nparams = { channels = [4], fc = 8 }'},
    "recurrent_model_plugin": {"model": 'name = "sparse_rsnn"\nparams = { hidden = [8], connectivity = 0.5 }'},
    "dataset_plugin": {"dataset": 'name = "sines"\nparams = { n_train = 64, n_test = 32 }'},
    "per_step_dataset_plugin": {
        "method": 'name = "tbptt"\nparams = { K = 2 }',
        "model": 'name = "rsnn"\nparams = { hidden = [8] }',
        "dataset": 'name = "delayed_echo"\nparams = { delay = 2, n_train = 64, n_test = 32 }',
    },
    "method_plugin": {"method": 'name = "tail_bptt"\nparams = { K = 2 }'},
    "online_method_plugin": {"method": 'name = "readout_online"\nparams = { update = "step" }'},
    "metric_plugin": {"metrics": '["calibration"]'},
    "convergent_model_plugin": {
        "model": 'name = "skip_hopfield"\nparams = { hidden = 16 }',
        "dataset": 'name = "digits"\nparams = { encoding = "static" }',
        "train": 'loss = "final_mse"',
        "neuron": "",  # a convergent model builds no neuron
    },
    "executor_plugin": {"executor": '[executor]\nname = "futures"\nworkers = 1'},
    "graph_model_plugin": {
        "model": 'name = "skip_gcn"\nparams = { hidden = [8] }',
        "dataset": 'name = "sbm"\nparams = { blocks = 2, block_size = 10 }',
    },
}


def one_cell_suite(stem: str) -> str:
    cell = {**BASE_CELL, **EXAMPLE_CELL[stem]}
    if cell["neuron"]:
        neuron = f'{{ name = "{cell["neuron"]}", params = {{ v_threshold = 0.3 }}, surrogate = "{cell["surrogate"]}" }}'
        cell["neuron"] = f"neuron = {neuron}"
    return f"""
name = "docs-{stem}"
metrics = {cell["metrics"]}
[train]
steps = 2
batch_size = 16
{cell["train"]}
[grid]
T = [4]
[[methods]]
{cell["method"]}
[[models]]
{cell["model"]}
{cell["neuron"]}
[[datasets]]
{cell["dataset"]}
{cell["executor"]}
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
    for stem, (kind, name) in EXAMPLE_PLUGINS.items():
        entry = examples_host.get(kind, name)
        assert (entry.plugin, entry.distribution, entry.version) == (f"local:{stem}", "local", "1.0")
        assert entry.digest is not None  # the file's hash is kept next to its __version__
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(EXAMPLE_PLUGINS)


# -- each example in a suite --------------------------------------------------------------------
@pytest.mark.parametrize("stem", list(EXAMPLE_PLUGINS))
def test_example_runs_in_a_one_cell_suite(examples_host, tmp_path, stem):
    suite = parse_suite(one_cell_suite(stem), examples_host, f"docs-{stem}.toml")
    assert len(suite.cells) == 1
    outcome = run_suite(suite, examples_host, results_root=tmp_path)
    row = outcome.results.iloc[0]
    assert row["status"] == "done", row["reason"]
    if stem == "executor_plugin":  # a run-level plugin: the manifest names it, a worker ran the cell
        manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
        assert manifest["executor"] == {"name": "futures", "options": {"workers": 1}}
        assert row["worker"]
    else:
        assert f"local:{stem}" in plugins_used(row)
    if stem == "metric_plugin":
        assert row["metric_errors"] == ""
        assert 0.0 <= row["ece"] <= 1.0 and 0.0 < row["mean_confidence"] <= 1.0
    if stem == "per_step_dataset_plugin":  # scored by accuracy over the scored steps
        assert 0.0 <= row["test_accuracy"] <= 1.0 and math.isnan(row["test_mse"])


def test_example_suite_of_the_guide_runs(examples_host, tmp_path):
    suite = load_suite(str(EXAMPLES / "examples.toml"), examples_host)
    outcome = run_suite(suite, examples_host, results_root=tmp_path)
    rows = outcome.results
    assert sorted(rows["method"]) == ["readout_online", "tail_bptt"]  # one cell per example method
    used: set[str] = set()
    for _, row in rows.iterrows():
        assert row["status"] == "done", row["reason"]
        assert row["spike_rate"] > 0  # the example network is alive
        assert math.isfinite(row["grad_cosine_bptt"]) and math.isfinite(row["ece"])
        used |= plugins_used(row)
    assert {f"local:{stem}" for stem in EXAMPLE_PLUGINS if stem not in NOT_IN_EXAMPLE_SUITE} <= used


# -- what the guide says each example does ------------------------------------------------------
def load_example_test_module() -> ModuleType:
    path = EXAMPLES / "tests" / "test_method_plugin.py"
    spec = importlib.util.spec_from_file_location("docs_example_method_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_method_examples_pass_their_conformance_tests(examples_host):
    tests = load_example_test_module()
    tests.test_tail_bptt_conforms(examples_host)
    tests.test_tail_bptt_declines_the_rate_loss(examples_host)
    for update in ("batch", "step"):
        tests.test_readout_online_conforms(examples_host, update)


class DropsStart(SequenceLoss):
    """A loss that forgets where a segment or step starts: the mistake the guide warns method authors of."""

    def segment(self, logits: torch.Tensor, y: torch.Tensor, T: int, start: int = 0) -> torch.Tensor:
        return super().segment(logits, y, T)

    def step(self, logits_t: torch.Tensor, y: torch.Tensor, T: int, t: int = 0) -> torch.Tensor:
        return super().step(logits_t, y, T)


def test_conformance_catches_a_method_that_forgets_start_on_per_step_tasks(examples_host):
    """The guide: ``run_conformance`` checks the per-step tasks a method declares in ``tasks``."""
    from snnarena.testing import run_conformance

    TailBPTT = examples_host.get("method", "tail_bptt").obj
    assert {"per_step_classification", "per_step_regression"} <= TailBPTT.tasks

    def forgetful() -> Any:
        method = TailBPTT(K=4)
        right = method.accumulate_gradients
        method.accumulate_gradients = lambda model, x, y, loss, clock: right(
            model, x, y, DropsStart(loss.form, loss.task), clock
        )
        return method

    tests = load_example_test_module()
    run_conformance(lambda: TailBPTT(K=4), lambda: tests.small_model(examples_host))  # passing start: conforms
    with pytest.raises(AssertionError, match="pass start/t to SequenceLoss.segment/step"):
        run_conformance(forgetful, lambda: tests.small_model(examples_host))


def test_neuron_example_threshold_adapts_after_a_spike(examples_host):
    neuron = examples_host.get("neuron", "simple_alif").obj(build_surrogate(examples_host, "atan"), beta=0.5, tau=2.0)
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
    assert (a.info.input_shape, a.info.n_classes, a.info.n_train + a.info.n_val) == ((3,), 5, 20)
    x, y = next(a.test_batches(4))
    assert x.shape == (6, 4, 3) and y.shape == (4,) and int(y.max()) < 5


def test_dataset_example_refuses_an_empty_frequency_range_at_the_key(examples_host):
    with pytest.raises(ParamError) as caught:
        examples_host.get("dataset", "sines").obj(f_min=3.0, f_max=2.0)
    assert [key for key, _ in caught.value.problems] == ["f_max"]
    text = one_cell_suite("dataset_plugin").replace("n_test = 32", "n_test = 32, f_min = 3.0, f_max = 2.0")
    with pytest.raises(SuiteError, match=r"bad\.toml: datasets\[0\]\.params\.f_max: must be greater than f_min"):
        parse_suite(text, examples_host, "bad.toml")


def test_dataset_example_input_size_is_the_built_input_shape(examples_host):
    sines = examples_host.get("dataset", "sines").obj
    for channels in (1, 5):
        params = {"n_train": 4, "n_test": 2, "channels": channels}
        bundle = build_dataset(examples_host, "sines", 3, 0, params)
        assert sines.input_size(sines(**params).params) == math.prod(bundle.info.input_shape)


def test_dataset_example_input_size_feeds_the_memory_check(examples_host, monkeypatch):
    # T=4 x eval batch 256 x 2 channels x 4 bytes = 8 KiB: more than a machine of 1 KB
    monkeypatch.setattr("snnarena.suite.machine_memory_bytes", lambda: 1000)
    with pytest.raises(SuiteError, match=r"grid\.T: T=4 needs about .* more than this machine's memory"):
        parse_suite(one_cell_suite("dataset_plugin"), examples_host, "big.toml")


def test_per_step_dataset_example_echoes_the_input_delay_steps_later(examples_host):
    delay, T = 3, 7
    params = {"delay": delay, "n_train": 20, "n_test": 10}
    bundle: DataBundle = build_dataset(examples_host, "delayed_echo", T, 5, params)
    assert (bundle.info.task, bundle.info.n_classes, bundle.info.input_shape) == ("per_step_classification", 2, (2,))
    assert examples_host.get("dataset", "delayed_echo").obj.task == bundle.info.task
    x, y = next(bundle.test_batches(4))  # x [T, B, 2] one-hot bits, y [T, B]
    assert x.shape == (T, 4, 2) and y.shape == (T, 4) and y.dtype == torch.long
    bits = x.argmax(-1)  # [T, B]
    assert (y[:delay] == IGNORE_INDEX).all()
    assert torch.equal(y[delay:], bits[: T - delay])
    assert bundle.y_train.shape == (bundle.info.n_train, T)  # stored [N, T]; batches are time-first


def test_per_step_dataset_example_refuses_T_up_to_the_delay(examples_host):
    text = one_cell_suite("per_step_dataset_plugin")
    parse_suite(text.replace("T = [4]", "T = [3]"), examples_host, "ok.toml")  # T = delay + 1: one scored step
    for T in (1, 2):
        with pytest.raises(SuiteError, match=rf"short\.toml: .*delayed_echo: T={T} leaves no step to score"):
            parse_suite(text.replace("T = [4]", f"T = [{T}]"), examples_host, "short.toml")


@pytest.mark.parametrize(("update", "steps"), [("batch", 1), ("step", 5)])
def test_online_method_example_steps_the_optimizer_as_documented(examples_host, update, steps):
    T = 5
    method = examples_host.get("method", "readout_online").obj(update=update)
    model = build_model(examples_host, "mlp", DataInfo((6,), 3, T, 0, 0), neuron_factory(examples_host, "lif"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    counted: list[int] = []
    optimizer.register_step_post_hook(lambda *_: counted.append(1))
    x, y = torch.rand(T, 4, 6) * 2, torch.tensor([0, 1, 2, 0])
    method.train_step(model, x, y, SequenceLoss("per_step"), optimizer, PhaseClock(enabled=False))
    assert len(counted) == steps  # once per batch, or after each of the T steps


def test_online_method_example_gives_bptts_readout_gradient_and_no_other(examples_host):
    make = neuron_factory(examples_host, "lif", {"v_threshold": 0.25}, "atan")
    model = build_model(examples_host, "mlp", DataInfo((6,), 3, 8, 0, 0), make, {"hidden": [7, 5]}).double()
    method = examples_host.get("method", "readout_online").obj()
    x, y = torch.rand(8, 4, 6, dtype=torch.float64) * 2, torch.tensor([0, 1, 2, 0])
    loss, clock = SequenceLoss("per_step"), PhaseClock(enabled=False)
    method.accumulate_gradients(model, x, y, loss, clock)
    ours = {n: p.grad for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    bptt_accumulate(model, x, y, loss, clock)
    for name, p in model.named_parameters():
        if name.startswith("readout."):
            torch.testing.assert_close(ours[name], p.grad)
        else:
            assert ours[name] is None, name
    frozen = method.frozen_parameters(model, model)
    assert frozen == {n for n in ours if not n.startswith("readout.")} and frozen


def test_an_undeclared_frozen_parameter_fails_the_cell(examples_host, tmp_path):
    """The guide: without ``frozen_parameters`` the online example's cell fails, naming it."""
    ReadoutOnline = examples_host.get("method", "readout_online").obj

    class Undeclared(ReadoutOnline):
        name = "readout_undeclared"

        def frozen_parameters(self, prepared: Any, model: Any) -> set[str]:
            return set()

    class Plugin:
        @snnarena.hookimpl
        def register_gradient_methods(self, register: Any) -> None:
            register(Undeclared)

    examples_host.add_plugin(Plugin(), "undeclared")
    try:
        text = one_cell_suite("online_method_plugin").replace("readout_online", "readout_undeclared")
        row = run_suite(parse_suite(text, examples_host, "u.toml"), examples_host, results_root=tmp_path).results
    finally:
        examples_host.remove_plugin("undeclared")
    assert row.iloc[0]["status"] == "failed"
    assert "without a gradient" in row.iloc[0]["reason"] and "frozen_parameters" in row.iloc[0]["reason"]


def test_recurrent_model_example_is_sparse_without_self_connections(examples_host):
    from snnarena.testing import run_conformance, run_model_conformance

    info = DataInfo((6,), 3, T=8, n_train=0, n_test=0)
    make = neuron_factory(examples_host, "lif", {"v_threshold": 0.25})

    def model() -> Any:
        return build_model(examples_host, "sparse_rsnn", info, make, {"hidden": [12], "connectivity": 0.3}).double()

    run_model_conformance(model)  # step = forward_seq, the state resumes, the recurrence matters
    run_conformance(lambda: examples_host.get("method", "bptt").obj(), model, Ts=(8, 16))
    net = model()
    recurrence = net.stages[0].recurrent
    assert recurrence.mask.diagonal().sum() == 0 and 0 < recurrence.mask.mean() < 1
    bptt_accumulate(
        net,
        torch.rand(8, 4, 6, dtype=torch.float64) * 2,
        torch.tensor([0, 1, 2, 0]),
        SequenceLoss("per_step"),
        PhaseClock(enabled=False),
    )
    grad = recurrence.weight.grad
    assert (grad[recurrence.mask == 0] == 0).all() and (grad[recurrence.mask == 1] != 0).any()


def test_convergent_model_example_steps_are_the_hard_sigmoid_of_its_drives(examples_host):
    from snnarena.testing import run_model_conformance

    info = DataInfo((5,), 3, T=8, n_train=0, n_test=0, task="static_classification")

    def model() -> Any:
        return build_model(examples_host, "skip_hopfield", info, neuron_factory(examples_host, "lif", {}), {}).double()

    run_model_conformance(model)  # relax = repeated dynamics with the nudge; Φ depends on every parameter
    net = model()
    x = torch.rand(4, 5, dtype=torch.float64)
    s1, s2 = torch.rand(4, 64, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    new1, new2 = net.dynamics(x, [s1, s2])
    w1, w2, u = net.w1, net.w2, net.skip_coupling.weight
    assert torch.allclose(new1, (x @ w1.weight.T + w1.bias + s2 @ w2.weight).clamp(0, 1), atol=1e-12)
    assert torch.allclose(new2, (s1 @ w2.weight.T + w2.bias + x @ u.T).clamp(0, 1), atol=1e-12)


def test_graph_model_example_passes_messages_along_edges_and_keeps_each_nodes_own_path(examples_host):
    from snnarena.graph import undirected_graph
    from snnarena.testing import run_model_conformance

    graph = undirected_graph(torch.tensor([[0, 1], [1, 2]]), 4)  # node 3 is isolated
    info = DataInfo((3,), 2, T=4, n_train=0, n_test=0, task="node_classification", graph=graph)

    def model() -> Any:
        make = neuron_factory(examples_host, "lif", {"v_threshold": 0.1})
        return build_model(examples_host, "skip_gcn", info, make, {"hidden": [6]}).double()

    run_model_conformance(model)  # one output per node; messages pass along the edges only
    synapse = model().stages[0].synapse
    h = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    (jacobian,) = torch.autograd.grad(synapse(h)[3].sum(), h)
    assert jacobian[3].abs().sum() > 0 and jacobian[:3].abs().sum() == 0  # the isolated node sees itself only


def test_method_example_claim_is_evaluated_by_snnarena_claims(examples_host, tmp_path, capsys):
    from snnarena.cli import main

    text = one_cell_suite("method_plugin").replace("T = [4]", "T = [6, 12]").replace("steps = 2", "steps = 1")
    outcome = run_suite(parse_suite(text, examples_host, "claims.toml"), examples_host, results_root=tmp_path)
    assert set(outcome.results["status"]) == {"done"}
    capsys.readouterr()
    code = main(
        ["--plugins-dir", str(EXAMPLES), "claims", "tail_bptt", "--run", str(outcome.run_dir), "--format", "json"]
    )
    (result,) = json.loads(capsys.readouterr().out)["claims"]
    assert code == 0 and result["claim"] == "memory-flat-in-T"
    assert result["verdict"] == "holds"  # K = 2 steps unrolled whatever T: the saved bytes do not grow
