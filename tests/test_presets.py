"""Method presets and suite protocols: ``preset = "..."`` in a method entry, ``grid.protocol``,
the rows' ``protocol``/``preset`` columns, the matching BPTT references and ``snnarena list -v``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import snnarena
from snnarena.cell import base_row
from snnarena.cli import main
from snnarena.errors import EXIT_OK
from snnarena.host import HostConfig, PluginHost
from snnarena.method import GradientMethod, Preset
from snnarena.params import Param
from snnarena.reference import bptt_accumulate
from snnarena.results import RESULT_COLUMNS
from snnarena.suite import CellSpec, SuiteError, parse_suite

PAPER = Preset(
    doc="as the (imaginary) paper runs it",
    params={"K": 4, "scale": 0.5},
    neuron={"name": "lif", "params": {"tau": 1.1}},
    surrogate={"name": "triangle", "params": {"alpha": 1.0}},
    loss="rate",
    optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
    sources={"params.K": "Paper §3", "neuron": "Paper, Table 1", "optimizer.lr": "official code, train.py"},
)


class Presetted(GradientMethod):
    """BPTT with two inert parameters and presets (a throwaway method for these tests)."""

    name = "presetted"
    PARAMS = (
        Param("K", "int", 2, "a window", low=1),
        Param("scale", "float", 1.0, "a scale", low=0.0),
    )
    PRESETS = {"paper": PAPER, "light": Preset(doc="only parameters", params={"K": 8})}
    families = frozenset({"feedforward", "recurrent"})

    def accumulate_gradients(self, model, x, y, loss, clock):  # type: ignore[no-untyped-def]
        return bptt_accumulate(model, x, y, loss, clock)


class PresetPlugin:
    @snnarena.hookimpl
    def register_gradient_methods(self, register):  # type: ignore[no-untyped-def]
        register(Presetted)


PLUGIN_FILE = """
import snnarena
from test_presets import Presetted


@snnarena.hookimpl
def register_gradient_methods(register):
    register(Presetted)
"""

SUITE = """
name = "presets"
[train]
epochs = 1
loss = "per_step"
optimizer = {{ name = "adam", lr = 0.01 }}
[grid]
T = [4]
{grid}
{methods}
[[models]]
name = "mlp"
params = {{ hidden = [8] }}
neuron = {{ name = "lif", params = {{ tau = 2.0 }}, surrogate = "atan" }}
{models}
[[datasets]]
name = "randman"
"""


@pytest.fixture
def preset_host() -> Iterator[PluginHost]:
    loaded = PluginHost.load(HostConfig())
    loaded.add_plugin(PresetPlugin(), "preset-plugin")
    try:
        yield loaded
    finally:
        loaded.remove_plugin("preset-plugin")


def suite(methods: str, grid: str = "", models: str = "") -> str:
    return SUITE.format(methods=methods, grid=grid, models=models)


def cells_of(host: PluginHost, text: str, method: str = "presetted") -> list[CellSpec]:
    return [c for c in parse_suite(text, host).cells if c.method == method]


def test_preset_params_are_defaults_under_the_entrys_own(preset_host: PluginHost) -> None:
    text = suite('[[methods]]\nname = "presetted"\npreset = "paper"\nparams = { K = 3 }')
    (cell,) = cells_of(preset_host, text)
    assert cell.method_params == {"K": 3, "scale": 0.5}  # the suite's K wins, the preset's scale fills in
    assert cell.preset == "paper" and cell.label.startswith("presetted@paper[K=3,scale=0.5]")


def test_a_preset_replaces_neuron_surrogate_loss_and_optimizer_of_its_cells_only(preset_host: PluginHost) -> None:
    text = suite('[[methods]]\nname = "presetted"\npreset = "paper"\n\n[[methods]]\nname = "bptt"')
    cells = parse_suite(text, preset_host).cells
    paper = next(c for c in cells if c.method == "presetted")
    plain = next(c for c in cells if c.method == "bptt" and c.loss == "per_step")
    assert (paper.neuron, paper.neuron_params, paper.surrogate, paper.surrogate_params) == (
        "lif",
        {"tau": 1.1},
        "triangle",
        {"alpha": 1.0},
    )
    assert paper.loss == "rate"
    assert paper.optimizer == {"name": "sgd", "lr": 0.1, "weight_decay": 0.0, "momentum": 0.9}
    assert (plain.neuron_params, plain.surrogate, plain.loss, plain.optimizer["name"], plain.preset) == (
        {"tau": 2.0},
        "atan",
        "per_step",
        "adam",
        "",
    )


def test_an_entrys_own_loss_wins_over_the_presets(preset_host: PluginHost) -> None:
    text = suite('[[methods]]\nname = "presetted"\npreset = "paper"\nloss = "per_step"')
    (cell,) = cells_of(preset_host, text)
    assert cell.loss == "per_step" and cell.surrogate == "triangle"


def test_a_model_without_neurons_keeps_none_under_a_preset(preset_host: PluginHost) -> None:
    text = suite(
        '[[methods]]\nname = "presetted"\npreset = "paper"',
        models='[[models]]\nname = "lstm"\nparams = { hidden = [8] }',
    )
    lstm = next(c for c in cells_of(preset_host, text) if c.model == "lstm")
    assert (lstm.neuron, lstm.neuron_params, lstm.surrogate, lstm.surrogate_params) == ("", {}, "", {})
    assert lstm.optimizer["name"] == "sgd" and lstm.loss == "rate"  # the rest of the preset still applies
    assert ("neuron", "") not in lstm.components


def test_an_unknown_preset_is_refused_naming_the_available_ones(preset_host: PluginHost) -> None:
    with pytest.raises(SuiteError) as err:
        parse_suite(suite('[[methods]]\nname = "presetted"\npreset = "papr"'), preset_host)
    assert "methods[0].preset: method 'presetted' has no preset 'papr'; its presets: 'light', 'paper'" in str(err.value)
    with pytest.raises(
        SuiteError, match="methods\\[0\\].preset: method 'bptt' has no preset 'paper'; its presets: none"
    ):
        parse_suite(suite('[[methods]]\nname = "bptt"\npreset = "paper"'), preset_host)


def test_the_at_spelling_is_refused_with_the_one_to_use(preset_host: PluginHost) -> None:
    with pytest.raises(SuiteError, match="name = 'presetted' and preset = 'paper'"):
        parse_suite(suite('[[methods]]\nname = "presetted@paper"'), preset_host)


def test_an_unknown_protocol_is_refused(preset_host: PluginHost) -> None:
    with pytest.raises(SuiteError, match="grid.protocol: expected one of 'harmonized', 'paper', got 'papers'"):
        parse_suite(suite('[[methods]]\nname = "bptt"', grid='protocol = "papers"'), preset_host)


def test_protocol_paper_applies_paper_presets_and_leaves_methods_without_one(preset_host: PluginHost) -> None:
    methods = '[[methods]]\nname = "bptt"\n\n[[methods]]\nname = "presetted"\n\n[[methods]]\nname = "presetted"\n'
    methods += 'preset = "light"'
    spec = parse_suite(suite(methods, grid='protocol = "paper"'), preset_host)
    by_entry = {(c.method, c.preset): c for c in spec.cells}
    assert set(by_entry) == {("bptt", ""), ("presetted", "paper"), ("presetted", "light")}
    assert {c.protocol for c in spec.cells} == {"paper"}
    assert by_entry[("presetted", "paper")].surrogate == "triangle"
    light = by_entry[("presetted", "light")]  # an explicit preset wins over the protocol's
    assert (light.method_params, light.surrogate, light.loss) == ({"K": 8}, "atan", "per_step")
    assert spec.added[0].startswith("protocol 'paper': method 'bptt' (methods[0]) has no 'paper' preset")
    harmonized = parse_suite(suite(methods), preset_host)
    assert {(c.method, c.preset) for c in harmonized.cells} == {("bptt", ""), ("presetted", ""), ("presetted", "light")}
    assert {c.protocol for c in harmonized.cells} == {"harmonized"}


def test_the_bptt_reference_follows_the_presets_setting(preset_host: PluginHost) -> None:
    text = suite('[[methods]]\nname = "bptt"\n\n[[methods]]\nname = "presetted"', grid='protocol = "paper"')
    spec = parse_suite(text, preset_host)
    bptt = [c for c in spec.cells if c.method == "bptt"]
    assert len(bptt) == 2
    reference = bptt[1]
    assert (reference.loss, reference.neuron_params, reference.surrogate, reference.optimizer["name"]) == (
        "rate",
        {"tau": 1.1},
        "triangle",
        "sgd",
    )
    assert reference.preset == "" and reference.method_params == {}
    assert spec.added[-1] == (
        "added bptt with loss 'rate', neuron lif tau=1.1, surrogate triangle alpha=1.0, optimizer sgd lr=0.1 "
        "weight_decay=0.0 momentum=0.9: the reference of 'presetted@paper K=4 scale=0.5' (methods[1]), "
        "which trains with that setting"
    )
    # a preset that only sets parameters trains in the suite's setting: bptt's own row is its reference
    light = suite('[[methods]]\nname = "bptt"\n\n[[methods]]\nname = "presetted"\npreset = "light"')
    assert [c.method for c in parse_suite(light, preset_host).cells] == ["bptt", "presetted"]


def test_cell_ids_change_only_when_a_protocol_or_preset_is_set(preset_host: PluginHost) -> None:
    text = suite('[[methods]]\nname = "presetted"\nparams = { K = 4 }')
    (plain,) = cells_of(preset_host, text)
    data = {k: v for k, v in plain.to_dict().items() if k not in ("protocol", "preset")}
    assert CellSpec.from_dict(data).cell_id == plain.cell_id  # a cell written before the fields existed
    (paper,) = cells_of(preset_host, suite('[[methods]]\nname = "presetted"\nparams = { K = 4 }', 'protocol = "paper"'))
    assert len({plain.cell_id, paper.cell_id}) == 2
    (named,) = cells_of(preset_host, suite('[[methods]]\nname = "presetted"\npreset = "light"\nparams = { K = 4 }'))
    assert named.method_params == plain.method_params and named.cell_id != plain.cell_id


def test_rows_carry_protocol_and_preset(preset_host: PluginHost) -> None:
    text = suite('[[methods]]\nname = "bptt"\n\n[[methods]]\nname = "presetted"', grid='protocol = "paper"')
    cells = parse_suite(text, preset_host).cells
    rows = [base_row(c, preset_host, "run", torch.device("cpu")) for c in cells]
    assert [(r["method"], r["protocol"], r["preset"]) for r in rows] == [
        ("bptt", "paper", ""),
        ("presetted", "paper", "paper"),
        ("bptt", "paper", ""),
    ]
    assert json.loads(rows[1]["method_params"]) == {"K": 4, "scale": 0.5}
    assert (rows[1]["optimizer"], rows[1]["lr"], rows[1]["momentum"], rows[1]["surrogate"]) == (
        "sgd",
        0.1,
        0.9,
        "triangle",
    )
    assert {"protocol", "preset"} <= set(RESULT_COLUMNS)


def test_list_verbose_shows_presets_with_values_and_sources(tmp_path: Path, capsys: Any) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "presetted.py").write_text(PLUGIN_FILE)
    assert main(["list", "--kind", "method", "-v", "--plugins-dir", str(folder)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "preset presetted@paper: as the (imaginary) paper runs it" in out
    assert "params.K = 4  [Paper §3]" in out
    assert "neuron.params.tau = 1.1  [Paper, Table 1]" in out  # cited by its enclosing key
    assert "optimizer.lr = 0.1  [official code, train.py]" in out
    assert "preset presetted@light: only parameters" in out
    assert main(["list", "--kind", "method", "--json", "--plugins-dir", str(folder)]) == EXIT_OK
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    paper = plugins["presetted"]["presets"]["paper"]
    assert paper["neuron"] == {"name": "lif", "params": {"tau": 1.1}}
    assert paper["sources"]["params.K"] == "Paper §3"
    assert plugins["bptt"]["presets"] == {}
