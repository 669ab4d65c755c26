"""Suite validation: every malformed suite fails before training with a message naming the
file, the key and what it accepts; a valid suite expands into the expected cells."""

from __future__ import annotations

import pytest
from plugin_fixtures import TINY_SUITE

from snnarena.suite import SuiteError, load_suite, parse_suite, shipped_suites

VALID = TINY_SUITE.format(behaviours='["ok", "skip"]')


def expect_error(host, text, *fragments):
    with pytest.raises(SuiteError) as info:
        parse_suite(text, host, "suites/bad.toml")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert message.startswith("suites/bad.toml: ")
    return message


def test_valid_suite_expands_grid(arena_host):
    suite = parse_suite(VALID, arena_host, "tiny.toml")
    # (bptt + flaky×2) × 1 model × 1 dataset × T × 2 seeds
    assert len(suite.cells) == 6
    assert {c.method for c in suite.cells} == {"bptt", "flaky"}
    assert len({c.cell_id for c in suite.cells}) == 6
    flaky = [c for c in suite.cells if c.method == "flaky"]
    assert {c.method_params["behaviour"] for c in flaky} == {"ok", "skip"}
    assert all(c.train["epochs"] == 2 and c.loss == "per_step" for c in suite.cells)


def test_cell_ids_are_stable(arena_host):
    a = parse_suite(VALID, arena_host).cells
    b = parse_suite(VALID, arena_host).cells
    assert [c.cell_id for c in a] == [c.cell_id for c in b]


def test_list_params_sweep_only_as_list_of_lists(arena_host):
    text = VALID.replace("hidden = [16]", "hidden = [[16], [8, 8]]")
    hidden = {tuple(c.model_params["hidden"]) for c in parse_suite(text, arena_host).cells}
    assert hidden == {(16,), (8, 8)}


def test_unknown_plugin_names_the_key_and_the_available(arena_host):
    expect_error(
        arena_host,
        VALID.replace('name = "bptt"', 'name = "bppt"'),
        "methods[0].name: unknown method 'bppt'; available:",
        "tbptt",
    )


def test_bad_parameter_value(arena_host):
    text = VALID + '\n[[methods]]\nname = "tbptt"\nparams = { K = "eight" }\n'
    expect_error(arena_host, text, "methods[2].params.K: expected an integer >= 1, got 'eight'")
    text = VALID + '\n[[methods]]\nname = "tbptt"\nparams = { K = 0 }\n'
    expect_error(arena_host, text, "methods[2].params.K: expected an integer >= 1, got 0")


def test_unknown_parameter_lists_allowed(arena_host):
    expect_error(
        arena_host,
        VALID.replace("tau = 2.0", "taux = 2.0"),
        "models[0].neuron.params.taux: unknown parameter; allowed: tau",
    )


def test_bad_choice(arena_host):
    expect_error(
        arena_host,
        VALID.replace('behaviour = ["ok", "skip"]', 'behaviour = "maybe"'),
        "methods[1].params.behaviour: expected one of 'ok', 'raise', 'nan', 'skip', got 'maybe'",
    )


def test_missing_keys_and_budget(arena_host):
    expect_error(arena_host, VALID.replace("[grid]", "[gridx]"), "grid: missing table [grid]", "gridx: unknown key")
    expect_error(arena_host, VALID.replace("epochs = 2", ""), "train: give a budget: epochs = N or steps = N")
    expect_error(arena_host, VALID.replace("T = [4]", "T = [0]"), "grid.T: expected an integer >= 1")
    expect_error(arena_host, VALID.replace("[[datasets]]", "[[datasetz]]"), "datasets: expected at least one")


def test_wrong_type_in_train(arena_host):
    expect_error(
        arena_host,
        VALID.replace("batch_size = 16", "batch_size = 16.5"),
        "train.batch_size: expected an integer >= 1, got 16.5",
    )
    expect_error(
        arena_host,
        VALID.replace("batch_size = 16", 'batch_size = 16\nloss = "mse"'),
        "train.loss: expected one of 'per_step', 'rate', 'final', 'final_mse', got 'mse'",
    )
    expect_error(
        arena_host,
        VALID.replace('name = "adam"', 'name = "lion"'),
        "train.optimizer.name: expected one of 'adam', 'adamw', 'adamax', 'sgd', got 'lion'",
    )


def test_several_problems_reported_at_once(arena_host):
    text = VALID.replace('name = "bptt"', 'name = "nope"').replace("tau = 2.0", "tau = 0.5")
    message = expect_error(
        arena_host, text, "methods[0].name", "models[0].neuron.params.tau: expected a finite number >= 1.0"
    )
    assert len(message.splitlines()) == 2


def test_invalid_toml(arena_host):
    expect_error(arena_host, "name = ", "not valid TOML")


def test_shipped_suites_are_valid(host):
    shipped = shipped_suites()
    assert "quick" in shipped
    assert {"quick", "methods", "memory-scaling"} <= set(shipped)
    # the papers' datasets: read from local files only
    needs_files = {"graphs-paper", "claims-paper-scale", *(name for name in shipped if name.startswith("paper-"))}
    for name in set(shipped) - needs_files:
        assert load_suite(name, host).cells
    for name in needs_files:
        with pytest.raises(SuiteError, match="never downloads") as refused:
            load_suite(name, host)
        assert all("not found" in problem for problem in refused.value.problems), name


def test_unknown_suite_name_lists_shipped(host):
    with pytest.raises(SuiteError, match="shipped suites: .*quick"):
        load_suite("no-such-suite", host)
