"""A battery of bad suite files and command-line inputs, run through the real ``snnarena`` command.

Every case must be refused the way the README's "Exit codes" promise: exit code 2, one message on
stderr naming the file, key, option or path at fault, no traceback, and nothing trained (no run
directory under the results root). The cases are mutations of one valid tiny suite
(:data:`SECTIONS`), which :func:`test_the_base_suite_is_valid` proves valid, so each case fails
for its own reason only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from snnarena.cli import main
from snnarena.errors import EXIT_OK, EXIT_USAGE
from snnarena.host import HostConfig, PluginHost
from snnarena.results import CellRecord, RunDirectory
from snnarena.runner import run_fingerprint
from snnarena.suite import parse_suite

PLUGIN = """
import snnarena
from plugin_fixtures import TinyBlobs, WeightNorm


@snnarena.hookimpl
def register_datasets(register):
    register(TinyBlobs)


@snnarena.hookimpl
def register_metrics(register):
    register(WeightNorm)
"""

#: The valid tiny suite, table by table; a case replaces some of them (or adds to them).
SECTIONS: dict[str, str] = {
    "top": 'name = "tiny"\ndescription = "bad-input battery"\n',
    "train": (
        "[train]\nsteps = 1\nbatch_size = 8\nfidelity = false\ntiming_warmup = 0\n"
        'optimizer = { name = "adam", lr = 0.03 }\n'
    ),
    "grid": "[grid]\nseeds = [0]\nT = [2]\n",
    "methods": '[[methods]]\nname = "bptt"\n',
    "models": '[[models]]\nname = "mlp"\nparams = { hidden = [8] }\n'
    'neuron = { name = "lif", params = { tau = 2.0 } }\n',
    "datasets": '[[datasets]]\nname = "tiny_blobs"\nparams = { n = 24 }\n',
}


def suite_text(**tables: str) -> str:
    """The base suite with some tables replaced (``top=`` replaces the top-level keys)."""
    unknown = set(tables) - set(SECTIONS)
    assert not unknown, unknown
    return "\n".join(tables.get(key, text) for key, text in SECTIONS.items())


def train(**settings: str) -> str:
    """A ``[train]`` table: the base settings, each overridden (or removed with ``None``) by ``settings``."""
    base = {"steps": "1", "batch_size": "8", "fidelity": "false", "timing_warmup": "0"}
    base["optimizer"] = '{ name = "adam", lr = 0.03 }'
    merged = {**base, **settings}
    return "[train]\n" + "".join(f"{k} = {v}\n" for k, v in merged.items() if v != "None")


def optimizer(text: str) -> str:
    return train(optimizer=text)


def model(text: str) -> str:
    return f'[[models]]\nname = "mlp"\nparams = {{ hidden = [8] }}\n{text}\n'


def neuron(text: str) -> str:
    return model(f"neuron = {text}")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "arena.py").write_text(PLUGIN)
    return folder


@pytest.fixture
def cli(capsys: Any) -> Callable[..., Result]:
    """Run ``snnarena`` in this process; an argparse refusal (``SystemExit``) gives its code."""

    def invoke(*args: str | Path) -> Result:
        try:
            code = main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def run_args(tmp_path: Path, plugins: Path, suite: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "run",
        suite,
        "--plugins-dir",
        plugins,
        "--results",
        tmp_path / "results",
        "--device",
        "cpu",
        "--no-report",
        *extra,
    ]


def assert_refused(result: Result, tmp_path: Path, *fragments: str) -> None:
    """Exit 2, each fragment on stderr, no traceback anywhere, no run directory made."""
    assert result.code == EXIT_USAGE, (result.code, result.out, result.err)
    assert "Traceback" not in result.out + result.err, result.err
    for fragment in fragments:
        assert fragment in result.err, (fragment, result.err)
    results = tmp_path / "results"
    made = sorted(p.relative_to(results) for p in results.rglob("*")) if results.exists() else []
    assert not [p for p in made if len(p.parts) >= 2], f"a run directory was made: {made}"


def test_the_base_suite_is_valid(tmp_path: Path, plugins: Path) -> None:
    host = PluginHost.load(HostConfig(plugins_dirs=(str(plugins),)))
    suite = parse_suite(suite_text(), host, "base.toml")
    assert suite.n_cells == 1


# -- 1. bad suite files: (tables replaced, what stderr must name) -----------------------------
SUITE_CASES = [
    # malformed files
    pytest.param({"top": 'name = "tiny\n'}, ["not valid TOML"], id="toml-unterminated-string"),
    pytest.param({"top": 'name = "a"\nname = "b"\n'}, ["not valid TOML"], id="toml-duplicate-key"),
    pytest.param({"grid": "[grid]\nseeds = [0\nT = [2]\n"}, ["not valid TOML"], id="toml-unclosed-list"),
    pytest.param(
        {"top": "", "train": "", "grid": "", "methods": "", "models": "", "datasets": ""}, ["grid"], id="empty-file"
    ),
    # top level
    pytest.param({"top": 'name = "tiny"\nsedes = [0]\n'}, ["sedes: unknown key"], id="top-unknown-key"),
    pytest.param({"top": "name = 5\n"}, ["name: expected a name"], id="name-not-a-string"),
    pytest.param({"top": 'name = "../../etc"\n'}, ["name: expected a name"], id="name-path-traversal"),
    pytest.param({"top": 'name = ""\n'}, ["name: expected a name"], id="name-empty"),
    pytest.param({"top": 'name = "tiny"\ndescription = 3\n'}, ["description: expected a string"], id="description-int"),
    pytest.param({"top": 'name = "tiny"\nmetrics = "weight_norm"\n'}, ["metrics: expected a list"], id="metrics-str"),
    pytest.param(
        {"top": 'name = "tiny"\nmetrics = ["no_such_metric"]\n'}, ["metrics[0]", "no_such_metric"], id="metrics-unknown"
    ),
    pytest.param({"top": 'name = "tiny"\nmetrics = [5]\n'}, ["metrics: expected a list"], id="metrics-int"),
    # [train]
    pytest.param({"train": "train = 5\n"}, ["train: expected a table"], id="train-not-a-table"),
    pytest.param({"train": train(steps="None")}, ["train: give a budget"], id="train-no-budget"),
    pytest.param({"train": train(epochs="1")}, ["train: give either epochs or steps"], id="train-epochs-and-steps"),
    pytest.param({"train": train(steps="0")}, ["train.steps"], id="steps-zero"),
    pytest.param({"train": train(steps='"ten"')}, ["train.steps"], id="steps-string"),
    pytest.param({"train": train(steps="1.5")}, ["train.steps"], id="steps-float"),
    pytest.param({"train": train(steps="true")}, ["train.steps"], id="steps-bool"),
    pytest.param({"train": train(steps="None", epochs="-1")}, ["train.epochs"], id="epochs-negative"),
    pytest.param({"train": train(batch_size="0")}, ["train.batch_size"], id="batch-size-zero"),
    pytest.param({"train": train(batch_size="[8, 16]")}, ["train.batch_size"], id="batch-size-list"),
    pytest.param({"train": train(eval_batch_size="-3")}, ["train.eval_batch_size"], id="eval-batch-size-negative"),
    pytest.param({"train": train(loss='"mse"')}, ["train.loss"], id="loss-unknown"),
    pytest.param({"train": train(timing_warmup="-1")}, ["train.timing_warmup"], id="timing-warmup-negative"),
    pytest.param({"train": train(fidelity='"yes"')}, ["train.fidelity"], id="fidelity-string"),
    pytest.param({"train": train(lerning_rate="0.1")}, ["train.lerning_rate"], id="train-unknown-key"),
    # train.optimizer
    pytest.param({"train": optimizer("5")}, ["train.optimizer"], id="optimizer-int"),
    pytest.param({"train": optimizer('"rmsprop"')}, ["train.optimizer.name"], id="optimizer-unknown-name-str"),
    pytest.param({"train": optimizer('{ name = "rmsprop" }')}, ["train.optimizer.name", "sgd"], id="optimizer-unknown"),
    pytest.param({"train": optimizer('{ name = "adam", lr = -0.1 }')}, ["train.optimizer.lr"], id="lr-negative"),
    pytest.param({"train": optimizer('{ name = "adam", lr = inf }')}, ["train.optimizer.lr"], id="lr-inf"),
    pytest.param({"train": optimizer('{ name = "adam", lr = nan }')}, ["train.optimizer.lr"], id="lr-nan"),
    pytest.param({"train": optimizer('{ name = "adam", lr = "fast" }')}, ["train.optimizer.lr"], id="lr-string"),
    pytest.param({"train": optimizer('{ name = "adam", lr = [0.1, 0.01] }')}, ["train.optimizer.lr"], id="lr-list"),
    pytest.param(
        {"train": optimizer('{ name = "adamw", weight_decay = -inf }')},
        ["train.optimizer.weight_decay"],
        id="wd-neg-inf",
    ),
    pytest.param(
        {"train": optimizer('{ name = "adamw", weight_decay = nan }')}, ["train.optimizer.weight_decay"], id="wd-nan"
    ),
    pytest.param(
        {"train": optimizer('{ name = "sgd", momentum = 1.5 }')}, ["train.optimizer.momentum"], id="momentum-above-1"
    ),
    pytest.param(
        {"train": optimizer('{ name = "sgd", momentum = nan }')}, ["train.optimizer.momentum"], id="momentum-nan"
    ),
    pytest.param(
        {"train": optimizer('{ name = "adam", momentum = 0.9 }')},
        ["train.optimizer.momentum: only the sgd optimizer uses momentum, not 'adam'"],
        id="momentum-with-adam",
    ),
    pytest.param(
        {"train": optimizer("{ momentum = 0.9 }")}, ["train.optimizer.momentum"], id="momentum-with-default-adam"
    ),
    pytest.param(
        {"train": optimizer('{ name = "adam", betas = [0.9, 0.99] }')},
        ["train.optimizer.betas"],
        id="optimizer-unknown-key",
    ),
    # [grid]
    pytest.param({"grid": ""}, ["grid: missing table [grid]"], id="grid-missing"),
    pytest.param({"top": 'name = "tiny"\ngrid = [2]\n', "grid": ""}, ["grid"], id="grid-not-a-table"),
    pytest.param({"grid": "[grid]\nseeds = [0]\n"}, ["grid.T: missing"], id="grid-T-missing"),
    pytest.param({"grid": "[grid]\nT = []\n"}, ["grid.T"], id="T-empty"),
    pytest.param({"grid": "[grid]\nT = [0]\n"}, ["grid.T"], id="T-zero"),
    pytest.param({"grid": "[grid]\nT = [-4]\n"}, ["grid.T"], id="T-negative"),
    pytest.param({"grid": '[grid]\nT = ["4"]\n'}, ["grid.T"], id="T-string"),
    pytest.param({"grid": "[grid]\nT = 2.5\n"}, ["grid.T"], id="T-float"),
    pytest.param({"grid": "[grid]\nT = [true]\n"}, ["grid.T"], id="T-bool"),
    pytest.param({"grid": "[grid]\nT = [2, 2]\n"}, ["grid.T: lists a value twice"], id="T-duplicate"),
    pytest.param({"grid": "[grid]\nT = [2]\nseeds = []\n"}, ["grid.seeds"], id="seeds-empty"),
    pytest.param({"grid": "[grid]\nT = [2]\nseeds = [-1]\n"}, ["grid.seeds"], id="seeds-negative"),
    pytest.param(
        {"grid": "[grid]\nT = [2]\nseeds = [0, 0]\n"}, ["grid.seeds: lists a value twice"], id="seeds-duplicate"
    ),
    pytest.param({"grid": "[grid]\nTs = [2]\nT = [2]\n"}, ["grid.Ts: unknown key"], id="grid-unknown-key"),
    pytest.param(
        {"grid": "[grid]\nT = [100000000]\n", "datasets": '[[datasets]]\nname = "digits"\n'},
        ["grid.T", "T=100000000 needs about", "more than this machine's memory"],
        id="T-huge-1e8",
    ),
    # [[methods]]
    pytest.param({"methods": ""}, ["methods: expected at least one [[methods]] entry"], id="methods-missing"),
    pytest.param(
        {"top": 'name = "tiny"\nmethods = []\n', "methods": ""},
        ["methods: expected at least one"],
        id="methods-empty-list",
    ),
    pytest.param(
        {"top": 'name = "tiny"\nmethods = ["bptt"]\n', "methods": ""},
        ["methods[0]: expected a table"],
        id="methods-entry-string",
    ),
    pytest.param({"methods": "[[methods]]\nparams = {}\n"}, ["methods[0].name"], id="method-without-name"),
    pytest.param({"methods": '[[methods]]\nname = "bptx"\n'}, ["methods[0].name", "bptx"], id="method-unknown"),
    pytest.param({"methods": "[[methods]]\nname = 5\n"}, ["methods[0].name"], id="method-name-int"),
    pytest.param(
        {"methods": '[[methods]]\nname = "bptt"\nparms = {}\n'},
        ["methods[0].parms: unknown key"],
        id="method-unknown-key",
    ),
    pytest.param(
        {"methods": '[[methods]]\nname = "bptt"\nparams = 3\n'}, ["methods[0].params"], id="method-params-int"
    ),
    pytest.param(
        {"methods": '[[methods]]\nname = "bptt"\nparams = { K = 4 }\n'},
        ["methods[0].params.K"],
        id="method-unknown-param",
    ),
    pytest.param(
        {"methods": '[[methods]]\nname = "tbptt"\nparams = { K = "eight" }\n'}, ["methods[0].params.K"], id="K-string"
    ),
    pytest.param(
        {"methods": '[[methods]]\nname = "tbptt"\nparams = { K = 0 }\n'}, ["methods[0].params.K"], id="K-zero"
    ),
    pytest.param(
        {"methods": '[[methods]]\nname = "tbptt"\nparams = { K = [] }\n'},
        ["methods[0].params.K", "empty list"],
        id="K-empty-sweep",
    ),
    pytest.param(
        {"methods": '[[methods]]\nname = "tbptt"\nparams = { K = [2, 0] }\n'},
        ["methods[0].params.K"],
        id="K-sweep-bad-value",
    ),
    pytest.param(
        {"methods": '[[methods]]\nname = "bptt"\nloss = "mse"\n'}, ["methods[0].loss"], id="method-loss-unknown"
    ),
    pytest.param(
        {"methods": '[[methods]]\nname = "bptt"\n\n[[methods]]\nname = "bptt"\n'},
        ["methods: methods[0] and methods[1] are the same variant"],
        id="methods-duplicate",
    ),
    pytest.param(
        {"methods": '[[methods]]\nname = "tbptt"\nparams = { K = [2, 2] }\n'},
        ["methods[0] gives the same variant 2 times"],
        id="K-sweep-duplicate",
    ),
    pytest.param(
        {"methods": '[[methods]]\nname = "checkpointed_bptt"\nparams = { budget_slots = 2, budget_bytes = 1000 }\n'},
        ["methods[0].params", "give at most one memory budget"],
        id="method-cross-parameter-conflict",
    ),
    pytest.param(
        {"methods": '[[methods]]\nname = "checkpointed_bptt"\nparams = { policy = "sqrt", budget_slots = [2, 3] }\n'},
        ["methods[0].params", "policy 'sqrt' fixes its memory"],
        id="method-cross-parameter-conflict-in-sweep",
    ),
    # [[models]] and their neuron / surrogate
    pytest.param(
        {"top": 'name = "tiny"\nmodels = []\n', "models": ""}, ["models: expected at least one"], id="models-empty-list"
    ),
    pytest.param(
        {"models": '[[models]]\nname = "transformer"\n'}, ["models[0].name", "transformer"], id="model-unknown"
    ),
    pytest.param(
        {"models": '[[models]]\nname = "mlp"\nparams = { hiden = [8] }\n'},
        ["models[0].params.hiden"],
        id="model-unknown-param",
    ),
    pytest.param(
        {"models": '[[models]]\nname = "mlp"\nparams = { hidden = "wide" }\n'},
        ["models[0].params.hidden"],
        id="hidden-string",
    ),
    pytest.param(
        {"models": '[[models]]\nname = "mlp"\nparams = { hidden = [0] }\n'},
        ["models[0].params.hidden"],
        id="hidden-zero",
    ),
    pytest.param(
        {"models": '[[models]]\nname = "mlp"\nlayers = 2\n'}, ["models[0].layers: unknown key"], id="model-unknown-key"
    ),
    pytest.param({"models": neuron("5")}, ["models[0].neuron"], id="neuron-int"),
    pytest.param(
        {"models": neuron('{ name = "izhikevich" }')}, ["models[0].neuron.name", "izhikevich"], id="neuron-unknown"
    ),
    pytest.param({"models": neuron('"izhikevich"')}, ["models[0].neuron.name"], id="neuron-unknown-str"),
    pytest.param(
        {"models": neuron('{ name = "lif", parms = {} }')},
        ["models[0].neuron.parms: unknown key"],
        id="neuron-unknown-key",
    ),
    pytest.param(
        {"models": neuron('{ name = "lif", params = { taux = 2.0 } }')},
        ["models[0].neuron.params.taux"],
        id="neuron-unknown-param",
    ),
    pytest.param(
        {"models": neuron('{ name = "lif", params = { tau = -1.0 } }')},
        ["models[0].neuron.params.tau"],
        id="tau-negative",
    ),
    pytest.param(
        {"models": neuron('{ name = "lif", params = { tau = nan } }')}, ["models[0].neuron.params.tau"], id="tau-nan"
    ),
    pytest.param(
        {"models": neuron('{ name = "lif", params = { tau = inf } }')}, ["models[0].neuron.params.tau"], id="tau-inf"
    ),
    pytest.param(
        {"models": neuron('{ name = "lif", params = { tau = [] } }')},
        ["models[0].neuron.params.tau"],
        id="tau-empty-sweep",
    ),
    pytest.param(
        {"models": neuron('{ name = "lif", params = { tau = "slow" } }')},
        ["models[0].neuron.params.tau"],
        id="tau-string",
    ),
    pytest.param(
        {"models": neuron('{ name = "lif", surrogate = 5 }')}, ["models[0].neuron.surrogate"], id="surrogate-int"
    ),
    pytest.param(
        {"models": neuron('{ name = "lif", surrogate = "sigmoidx" }')},
        ["models[0].neuron.surrogate.name"],
        id="surrogate-unknown",
    ),
    pytest.param(
        {"models": neuron('{ name = "lif", surrogate = { name = "atan", params = { beta = 1.0 } } }')},
        ["models[0].neuron.surrogate.params.beta"],
        id="surrogate-unknown-param",
    ),
    pytest.param(
        {"models": neuron('{ name = "lif", surrogate = { name = "atan", params = { alpha = "big" } } }')},
        ["models[0].neuron.surrogate.params.alpha"],
        id="surrogate-alpha-string",
    ),
    pytest.param(
        {"models": SECTIONS["models"] + "\n" + SECTIONS["models"]},
        ["models: models[0] and models[1] are the same variant"],
        id="models-duplicate",
    ),
    pytest.param(
        {"models": neuron('{ name = "lif", params = { reset = "none" } }')},
        ["models[0].neuron.params.reset", "'soft', 'hard'"],
        id="neuron-reset-choice",
    ),
    pytest.param(
        {"models": '[[models]]\nname = "mlp"\nparams = { hidden = [[8], [8]] }\n'},
        ["models[0] gives the same variant 2 times"],
        id="hidden-sweep-duplicate",
    ),
    # [[datasets]]
    pytest.param({"datasets": ""}, ["datasets: expected at least one"], id="datasets-missing"),
    pytest.param(
        {"datasets": '[[datasets]]\nname = "imagenet21k"\n'}, ["datasets[0].name", "imagenet21k"], id="dataset-unknown"
    ),
    pytest.param(
        {"datasets": '[[datasets]]\nname = "tiny_blobs"\nparams = { m = 3 }\n'},
        ["datasets[0].params.m"],
        id="dataset-unknown-param",
    ),
    pytest.param(
        {"datasets": '[[datasets]]\nname = "tiny_blobs"\nparams = { n = 2 }\n'},
        ["datasets[0].params.n"],
        id="dataset-param-low",
    ),
    pytest.param({"datasets": '[[datasets]]\nname = "tiny_blobs"\nT = [0]\n'}, ["datasets[0].T"], id="dataset-T-zero"),
    pytest.param({"datasets": '[[datasets]]\nname = "tiny_blobs"\nT = []\n'}, ["datasets[0].T"], id="dataset-T-empty"),
    pytest.param(
        {"datasets": '[[datasets]]\nname = "tiny_blobs"\nseeds = [1]\n'},
        ["datasets[0].seeds: unknown key"],
        id="dataset-unknown-key",
    ),
    pytest.param(
        {"datasets": SECTIONS["datasets"] + "\n" + SECTIONS["datasets"]},
        ["datasets: datasets[0] and datasets[1] are the same variant"],
        id="datasets-duplicate",
    ),
    pytest.param(
        {"datasets": '[[datasets]]\nname = "digits"\nparams = { encoding = "morse" }\n'},
        ["datasets[0].params.encoding"],
        id="dataset-encoding-unknown",
    ),
    pytest.param(
        {"datasets": '[[datasets]]\nname = "digits"\nT = [2, 100000000]\n'},
        ["datasets[0].T", "T=100000000 needs about"],
        id="dataset-T-huge",
    ),
    pytest.param(
        {"datasets": '[[datasets]]\nname = "mnist"\nparams = { root = "/nonexistent/snnarena-mnist" }\n'},
        ["datasets[0]", "/nonexistent/snnarena-mnist", "train-images-idx3-ubyte"],
        id="mnist-root-missing",
    ),
    # several problems at once: all reported
    pytest.param(
        {"train": train(steps="0"), "grid": "[grid]\nT = [0]\n", "methods": '[[methods]]\nname = "bptx"\n'},
        ["train.steps", "grid.T", "methods[0].name"],
        id="three-problems-at-once",
    ),
]


@pytest.mark.parametrize(("tables", "fragments"), SUITE_CASES)
def test_a_bad_suite_is_refused_before_anything_runs(
    tmp_path: Path, plugins: Path, cli: Callable[..., Result], tables: dict[str, str], fragments: list[str]
) -> None:
    suite = tmp_path / "bad.toml"
    suite.write_text(suite_text(**tables), encoding="utf-8")
    result = cli(*run_args(tmp_path, plugins, suite))
    assert_refused(result, tmp_path, f"{suite}: ", *fragments)


# -- 2. bad files and command-line inputs ------------------------------------------------------
def write_suite(tmp_path: Path, text: str | None = None, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(suite_text() if text is None else text, encoding="utf-8")
    return path


def grid_of(n_seeds: int, n_T: int) -> str:
    return f"[grid]\nseeds = {list(range(n_seeds))}\nT = {list(range(1, n_T + 1))}\n"


def fake_run(path: Path, suite: str, fingerprint: dict[str, Any] | None = None) -> Path:
    """A run directory holding one finished cell (made without training)."""
    run = RunDirectory(path)
    manifest: dict[str, Any] = {"run_id": path.name, "suite": suite, "environment": {"device": "cpu"}}
    if fingerprint is not None:
        manifest["fingerprint"] = fingerprint
    run.write_manifest(manifest, suite_text())
    row = {"run_id": path.name, "suite": suite, "cell_id": "c0", "label": "bptt", "method": "bptt", "status": "done"}
    run.write_cell(CellRecord({}, {**row, "test_accuracy": 0.5, "T": 2, "seed": 0}, []))
    run.aggregate()
    return path


def test_a_missing_suite_file(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    missing = tmp_path / "nowhere.toml"
    assert_refused(cli(*run_args(tmp_path, plugins, missing)), tmp_path, str(missing), "no such file")


def test_a_directory_as_suite(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    folder = tmp_path / "suites"
    folder.mkdir()
    assert_refused(cli(*run_args(tmp_path, plugins, folder)), tmp_path, str(folder), "is a directory")


def test_a_non_utf8_suite(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    suite = tmp_path / "latin1.toml"
    suite.write_bytes(suite_text(top='name = "tiny"\ndescription = "caf\xe9"\n').encode("latin-1"))
    assert_refused(cli(*run_args(tmp_path, plugins, suite)), tmp_path, str(suite), "not UTF-8", "0xe9")


def test_a_binary_file_as_suite(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    suite = tmp_path / "model.pt"
    suite.write_bytes(bytes(range(256)) * 4)
    assert_refused(cli(*run_args(tmp_path, plugins, suite)), tmp_path, str(suite))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_suite(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    suite = write_suite(tmp_path)
    suite.chmod(0)
    try:
        assert_refused(cli(*run_args(tmp_path, plugins, suite)), tmp_path, str(suite), "cannot be read")
    finally:
        suite.chmod(0o644)


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        pytest.param(["--only", "methd=bptt"], ["--only: unknown key 'methd'", "method"], id="only-unknown-key"),
        pytest.param(
            ["--only", "method=tbptt"],
            ["--only 'method=tbptt' matches none of the suite's 1 cells"],
            id="only-matches-nothing",
        ),
        pytest.param(["--only", "method="], ["--only", "matches none"], id="only-empty-pattern"),
        pytest.param(["--only", "*resnet*"], ["--only", "matches none"], id="only-label-glob-matches-nothing"),
        pytest.param(["--only", "T=2,sed=0"], ["--only: unknown key 'sed'"], id="only-second-key-unknown"),
        pytest.param(["--jobs", "0"], ["--jobs", "must be >= 1"], id="jobs-zero"),
        pytest.param(["--jobs", "-2"], ["--jobs"], id="jobs-negative"),
        pytest.param(["--jobs", "two"], ["--jobs", "'two'"], id="jobs-word"),
        pytest.param(["--threads", "-1"], ["--threads", "must be >= 1"], id="threads-negative"),
        pytest.param(["--threads", "0"], ["--threads"], id="threads-zero"),
        pytest.param(["--threads", "1.5"], ["--threads"], id="threads-float"),
        pytest.param(["--max-cells", "0"], ["--max-cells"], id="max-cells-zero"),
        pytest.param(["--device", "gpu0"], ["--device 'gpu0'", "cpu, cuda"], id="device-unknown"),
        pytest.param(["--device", ""], ["--device"], id="device-empty"),
        pytest.param(["--device", "cpu:x"], ["--device 'cpu:x'"], id="device-bad-index"),
        pytest.param(["--max-cells", "0", "--yes"], ["--max-cells"], id="max-cells-zero-with-yes"),
        pytest.param(["--unknown-option"], ["unrecognized arguments: --unknown-option"], id="unknown-option"),
        pytest.param(["--force"], ["--force only applies to --resume"], id="force-without-resume"),
    ],
)
def test_bad_run_options(
    tmp_path: Path, plugins: Path, cli: Callable[..., Result], extra: list[str], fragments: list[str]
) -> None:
    suite = write_suite(tmp_path)
    assert_refused(cli(*run_args(tmp_path, plugins, suite, *extra)), tmp_path, *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_a_cuda_device_without_cuda(tmp_path: Path, plugins: Path, cli: Callable[..., Result], device: str) -> None:
    suite = write_suite(tmp_path)
    result = cli(*run_args(tmp_path, plugins, suite, "--device", device))
    assert_refused(result, tmp_path, f"--device {device!r}", "no CUDA device")


def test_a_huge_grid_needs_yes(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    suite = write_suite(tmp_path, suite_text(grid=grid_of(101, 100)))
    assert_refused(cli(*run_args(tmp_path, plugins, suite)), tmp_path, str(suite), "10,100 cells", "--yes")


def test_a_million_cell_grid_is_refused_at_once(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    suite = write_suite(tmp_path, suite_text(grid=grid_of(1000, 1000)))
    started = time.perf_counter()
    result = cli(*run_args(tmp_path, plugins, suite))
    assert_refused(result, tmp_path, "1,000,000 cells", "--yes")
    assert time.perf_counter() - started < 10  # counted, not expanded


def test_a_missing_plugins_folder_is_named(tmp_path: Path, cli: Callable[..., Result]) -> None:
    """A folder named on the command line that is not there is refused before the suite is read."""
    suite = write_suite(tmp_path)
    nowhere = tmp_path / "no-such-plugins"
    result = cli(*run_args(tmp_path, nowhere, suite))
    assert_refused(result, tmp_path, f"--plugins-dir {nowhere}: the folder does not exist")


def test_a_file_as_plugins_folder_is_named(tmp_path: Path, cli: Callable[..., Result]) -> None:
    suite = write_suite(tmp_path)
    not_a_folder = tmp_path / "plugin.py"
    not_a_folder.write_text(PLUGIN)
    result = cli(*run_args(tmp_path, not_a_folder, suite))
    assert_refused(result, tmp_path, f"--plugins-dir {not_a_folder}: is a file, not a folder")


def test_a_missing_plugins_folder_refuses_even_a_builtin_suite(
    tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    import snnarena.runner

    def trains(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt  # stands for the training that should not start (exit 130)

    monkeypatch.setattr(snnarena.runner, "run_suite", trains)
    suite = write_suite(tmp_path, suite_text(datasets='[[datasets]]\nname = "digits"\n'))
    nowhere = tmp_path / "no-such-plugins"
    result = cli(*run_args(tmp_path, nowhere, suite))
    assert_refused(result, tmp_path, str(nowhere), "does not exist")


def test_results_root_is_a_file(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    suite = write_suite(tmp_path)
    blocked = tmp_path / "results"
    blocked.write_text("")
    args = run_args(tmp_path, plugins, suite)
    result = cli(*args)
    assert result.code == EXIT_USAGE and "Traceback" not in result.err
    assert str(blocked) in result.err and blocked.read_text() == ""


def test_report_dir_is_a_file(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    suite = write_suite(tmp_path)
    blocked = tmp_path / "report-file"
    blocked.write_text("")
    args = [a for a in run_args(tmp_path, plugins, suite) if a != "--no-report"]
    assert_refused(cli(*args, "--report-dir", blocked), tmp_path, str(blocked), "not a folder")


# -- --resume ----------------------------------------------------------------------------------
def test_resume_of_a_missing_directory(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    suite = write_suite(tmp_path)
    nowhere = tmp_path / "results" / "tiny" / "nowhere"
    result = cli(*run_args(tmp_path, plugins, suite, "--resume", nowhere))
    assert_refused(result, tmp_path, str(nowhere), "not a snnarena run directory")
    assert not nowhere.exists()


def test_resume_of_a_folder_that_is_not_a_run(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    suite = write_suite(tmp_path)
    folder = tmp_path / "elsewhere" / "holiday-photos"
    folder.mkdir(parents=True)
    (folder / "beach.jpg").write_bytes(b"\xff\xd8")
    result = cli(*run_args(tmp_path, plugins, suite, "--resume", folder))
    assert_refused(result, tmp_path, str(folder), "not a snnarena run directory")
    assert sorted(p.name for p in folder.iterdir()) == ["beach.jpg"]  # nothing written into it


def test_resume_of_a_file(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    suite = write_suite(tmp_path)
    result = cli(*run_args(tmp_path, plugins, suite, "--resume", suite))
    assert_refused(result, tmp_path, str(suite), "not a snnarena run directory")


def test_resume_of_a_run_of_another_suite(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    suite = write_suite(tmp_path)
    other = fake_run(tmp_path / "elsewhere" / "other" / "r1", "other")
    before = {p.name: p.read_bytes() for p in other.rglob("*") if p.is_file() and p.name != ".lock"}
    result = cli(*run_args(tmp_path, plugins, suite, "--resume", other))
    assert_refused(result, tmp_path, str(other), "that run is of suite 'other', not 'tiny'")
    after = {p.name: p.read_bytes() for p in other.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


def test_resume_of_an_edited_suite_names_the_change(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    host = PluginHost.load(HostConfig(plugins_dirs=(str(plugins),)))
    fingerprint = run_fingerprint(parse_suite(suite_text(), host), host, torch.device("cpu"))
    run = fake_run(tmp_path / "elsewhere" / "tiny" / "r1", "tiny", fingerprint)
    edited = write_suite(tmp_path, suite_text(train=optimizer('{ name = "adam", lr = 0.5 }')))
    result = cli(*run_args(tmp_path, plugins, edited, "--resume", run))
    assert_refused(result, tmp_path, str(run), "train.optimizer.lr: 0.03 -> 0.5", "--force")
    assert len(list((run / "cells").glob("*.json"))) == 1


def test_resume_with_an_unchanged_suite_is_accepted(tmp_path: Path, plugins: Path, cli: Callable[..., Result]) -> None:
    """The control of the case above: the same fingerprint resumes (nothing left to run)."""
    host = PluginHost.load(HostConfig(plugins_dirs=(str(plugins),)))
    spec = parse_suite(suite_text(), host)
    run = fake_run(tmp_path / "elsewhere" / "tiny" / "r1", "tiny", run_fingerprint(spec, host, torch.device("cpu")))
    cell = RunDirectory(run).records()[0]
    RunDirectory(run).write_cell(CellRecord({}, {**cell.row, "cell_id": spec.cells[0].cell_id}, []))
    (run / "cells" / "c0.json").unlink()
    result = cli(*run_args(tmp_path, plugins, write_suite(tmp_path), "--resume", run))
    assert result.code == EXIT_OK, result.err
    assert "1 cell(s) already finished" in result.out


# -- report and compare ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(
            ["report", "{tmp}/nowhere"], ["{tmp}/nowhere", "not a snnarena run directory"], id="report-missing-dir"
        ),
        pytest.param(["report", "{tmp}/empty"], ["{tmp}/empty", "not a snnarena run directory"], id="report-not-a-run"),
        pytest.param(["report", "{tmp}/run", "{tmp}/nowhere"], ["{tmp}/nowhere"], id="report-second-dir-missing"),
        pytest.param(
            ["report", "{tmp}/run", "--out", "{tmp}/file"],
            ["{tmp}/file"],
            id="report-out-is-a-file",
        ),
        pytest.param(["report"], ["run_dirs"], id="report-no-dir"),
        pytest.param(
            ["compare", "{tmp}/empty", "{tmp}/run"],
            ["{tmp}/empty", "not a snnarena run directory"],
            id="compare-a-not-a-run",
        ),
        pytest.param(["compare", "{tmp}/run", "{tmp}/nowhere"], ["{tmp}/nowhere"], id="compare-b-missing"),
        pytest.param(["compare", "{tmp}/run"], ["run_b"], id="compare-one-dir"),
        pytest.param(
            ["compare", "{tmp}/run", "{tmp}/run", "--tolerance", "time=fast"],
            ["--tolerance: 'fast' is not a tolerance"],
            id="tolerance-word",
        ),
        pytest.param(
            ["compare", "{tmp}/run", "{tmp}/run", "--tolerance", "time=-5%"],
            ["--tolerance: '-5%'"],
            id="tolerance-negative",
        ),
        pytest.param(
            ["compare", "{tmp}/run", "{tmp}/run", "--tolerance", "time=nan"], ["--tolerance: 'nan'"], id="tolerance-nan"
        ),
        pytest.param(
            ["compare", "{tmp}/run", "{tmp}/run", "--tolerance", "time"],
            ["--tolerance 'time': expected KIND=VALUE"],
            id="tolerance-no-value",
        ),
        pytest.param(
            ["compare", "{tmp}/run", "{tmp}/run", "--tolerance", "=5%"], ["--tolerance '=5%'"], id="tolerance-no-key"
        ),
        pytest.param(
            ["compare", "{tmp}/run", "{tmp}/run", "--tolerance", "speed=5%"],
            ["--tolerance speed: neither a column kind"],
            id="tolerance-unknown-key",
        ),
        pytest.param(
            ["compare", "{tmp}/run", "{tmp}/run", "--format", "xml"], ["--format", "'xml'"], id="format-unknown"
        ),
        pytest.param(["compare", "{tmp}/run", "{tmp}/run", "--spread", "-1"], ["--spread"], id="spread-negative"),
        pytest.param(["compare", "{tmp}/run", "{tmp}/run", "--spread", "nan"], ["--spread"], id="spread-nan"),
        pytest.param(["compare", "{tmp}/run", "{tmp}/run", "--iqr", "-2"], ["IQR factor"], id="iqr-negative"),
        pytest.param(
            ["compare", "{tmp}/run", "{tmp}/run", "--spread", "wide"], ["--spread", "'wide'"], id="spread-word"
        ),
        pytest.param(["compare", "{tmp}/run", "{tmp}/other"], ["no cell in common"], id="compare-disjoint-suites"),
        pytest.param(
            ["profile", "{tmp}/tiny.toml", "--only", "method=bptt", "--steps", "0"],
            ["--steps"],
            id="profile-steps-zero",
        ),
        pytest.param(["profile", "{tmp}/tiny.toml"], ["--only"], id="profile-without-only"),
        pytest.param(
            ["profile", "{tmp}/tiny.toml", "--only", "method=nothing"],
            ["matches none"],
            id="profile-only-matches-nothing",
        ),
        pytest.param(["list", "--kind", "optimizer"], ["--kind", "'optimizer'"], id="list-unknown-kind"),
        pytest.param(["train", "{tmp}/tiny.toml"], ["invalid choice: 'train'"], id="unknown-subcommand"),
        pytest.param([], ["command"], id="no-subcommand"),
    ],
)
def test_bad_report_compare_profile_list_inputs(
    places: Path, cli: Callable[..., Result], args: list[str], fragments: list[str]
) -> None:
    before = {p: p.read_bytes() for p in places.rglob("*") if p.is_file() and p.name != ".lock"}
    full = [a.format(tmp=places) for a in args]
    if full and full[0] == "profile":
        full += ["--plugins-dir", str(places / "plugins"), "--results", str(places / "results"), "--device", "cpu"]
    result = cli(*full)
    assert_refused(result, places, *(f.format(tmp=places) for f in fragments))
    assert {p: p.read_bytes() for p in places.rglob("*") if p.is_file() and p.name != ".lock"} == before


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the report/compare/profile cases point at (never changed by them): a suite, an empty
    folder, a file, a run of suite tiny and a run of suite other with no cell in common."""
    root = tmp_path_factory.mktemp("places")
    (root / "plugins").mkdir()
    (root / "plugins" / "arena.py").write_text(PLUGIN)
    write_suite(root)
    (root / "empty").mkdir()
    (root / "file").write_text("")
    fake_run(root / "run", "tiny")
    other = RunDirectory(fake_run(root / "other", "other"))
    other.write_cell(CellRecord({}, {**other.records()[0].row, "method": "ottt"}, []))
    other.aggregate()
    return root
