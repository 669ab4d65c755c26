"""Declared parameters: empty-list defaults, every problem of a table at once, non-finite floats,
and resolving a resolved table never failing on a key the user did not write."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

import snnarena
from snnarena.host import HostConfig, PluginHost
from snnarena.method import GradientMethod
from snnarena.params import Param, ParamError, ParamSet
from snnarena.reference import bptt_accumulate
from snnarena.suite import SuiteError, parse_suite


# -- lists ------------------------------------------------------------------------------------
def test_empty_list_default_and_empty_list_value_are_valid() -> None:
    layers = ParamSet((Param("layers", "int_list", (), "layers to cut", low=0),))
    assert layers.resolve({}) == {"layers": []}
    assert layers.resolve({"layers": []}) == {"layers": []}
    assert layers.resolve(layers.resolve({})) == {"layers": []}


def test_min_len_refuses_short_lists_and_is_described() -> None:
    hidden = Param("hidden", "int_list", (8,), "widths", low=1, min_len=1)
    assert "at least 1" in hidden.describe()
    with pytest.raises(ParamError, match=r"hidden: expected a list of integers \(at least 1\), each >= 1, got \[\]"):
        ParamSet((hidden,)).resolve({"hidden": []})
    assert ParamSet((hidden,)).resolve({"hidden": [3, 4]}) == {"hidden": [3, 4]}


def test_a_resolved_table_resolves_again_whatever_the_defaults() -> None:
    # a default the declaration itself would refuse (None without nullable) is the plugin's choice
    declared = ParamSet((Param("k", "int", None, "optional", low=1), Param("layers", "int_list", ())))
    once = declared.resolve({})
    assert declared.resolve(once) == once == {"k": None, "layers": []}
    with pytest.raises(ParamError, match="k: expected an integer >= 1, got 0"):
        declared.resolve({"k": 0})


# -- every problem at once --------------------------------------------------------------------
def test_resolve_reports_every_problem_of_a_table() -> None:
    declared = ParamSet(
        (
            Param("K", "int", 4, low=1),
            Param("mode", "str", "a", choices=("a", "b")),
            Param("target", "float", None, required=True),
        )
    )
    with pytest.raises(ParamError) as info:
        declared.resolve({"K": "eight", "mode": "c", "extra": 1})
    problems = dict(info.value.problems)
    assert set(problems) == {"K", "mode", "target", "extra"}
    assert problems["K"] == "expected an integer >= 1, got 'eight'"
    assert problems["mode"] == "expected one of 'a', 'b', got 'c'"
    assert problems["target"].startswith("missing required parameter")
    assert problems["extra"] == "unknown parameter; allowed: K, mode, target"
    assert "K: expected an integer >= 1, got 'eight'" in str(info.value)  # readable for direct callers


def test_a_lone_value_error_has_no_key() -> None:
    with pytest.raises(ParamError) as info:
        Param("K", "int", low=1).validate(0)
    assert info.value.problems == [("", "expected an integer >= 1, got 0")]
    assert str(info.value) == "expected an integer >= 1, got 0"


# -- non-finite floats ------------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_floats_refuse_inf_and_nan_by_default(value: float) -> None:
    with pytest.raises(ParamError, match="expected a finite number"):
        Param("lr", "float", 1e-3, low=0.0).validate(value)
    with pytest.raises(ParamError):
        Param("w", "float_list", ()).validate([1.0, value])


def test_allow_inf_admits_infinity_but_never_nan() -> None:
    clip = Param("clip", "float", math.inf, low=0.0, allow_inf=True)
    assert clip.validate(math.inf) == math.inf
    assert "finite" not in clip.describe()
    with pytest.raises(ParamError):
        clip.validate(math.nan)


# -- through a suite: a plugin with an empty-list default -------------------------------------
class Layered(GradientMethod):
    """BPTT with a list parameter whose default is the empty list."""

    name = "layered"
    PARAMS = (Param("layers", "int_list", (), "layers to treat specially", low=0),)

    def accumulate_gradients(self, model, x, y, loss, clock):
        return bptt_accumulate(model, x, y, loss, clock)


class LayeredPlugin:
    @snnarena.hookimpl
    def register_gradient_methods(self, register):
        register(Layered)


@pytest.fixture
def layered_host() -> Iterator[PluginHost]:
    host = PluginHost.load(HostConfig())
    host.add_plugin(LayeredPlugin(), "layered-plugin")
    try:
        yield host
    finally:
        host.remove_plugin("layered-plugin")


SUITE = """
name = "layered"
[train]
epochs = 1
[grid]
T = [4]
[[methods]]
name = "layered"
{params}
[[models]]
name = "mlp"
params = {{ hidden = [8] }}
[[datasets]]
name = "digits"
"""


def test_a_plugin_with_an_empty_list_default_runs_in_a_suite(layered_host: PluginHost) -> None:
    assert parse_suite(SUITE.format(params=""), layered_host).n_cells == 1
    suite = parse_suite(SUITE.format(params="params = { layers = [[], [0, 1]] }"), layered_host)
    assert [c.method_params["layers"] for c in suite.cells] == [[], [0, 1]]


def test_every_bad_key_of_a_params_table_is_reported(layered_host: PluginHost) -> None:
    text = SUITE.format(params='params = { layers = [-1], cut = 2, mode = "x" }')
    with pytest.raises(SuiteError) as info:
        parse_suite(text, layered_host, "suites/x.toml")
    assert info.value.problems == [
        "methods[0].params.cut: unknown parameter; allowed: layers",
        "methods[0].params.mode: unknown parameter; allowed: layers",
        "methods[0].params.layers: expected a list of integers, each >= 0, got [-1]",
    ]
