"""Suite validation that fails before the work: all problems at once, optimizer settings,
unreadable suite files, repeated variants, huge grids counted without expansion, input batches
too large for memory, and dataset files checked before any training."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest
from plugin_fixtures import TINY_SUITE

from snnarena.host import PluginHost
from snnarena.suite import SuiteError, load_suite, machine_memory_bytes, parse_suite

VALID = TINY_SUITE.format(behaviours='["ok", "skip"]')


def problems(host: PluginHost, text: str) -> list[str]:
    with pytest.raises(SuiteError) as info:
        parse_suite(text, host, "suites/x.toml")
    assert all(line.startswith("suites/x.toml: ") for line in str(info.value).splitlines())
    return info.value.problems


# -- all problems at once ---------------------------------------------------------------------
def test_every_problem_of_every_table_is_listed(arena_host: PluginHost) -> None:
    text = VALID.replace("batch_size = 16", 'batch_size = 0\nloss = "mse"\nwarmup = 1') + (
        '\n[[methods]]\nname = "tbptt"\nparams = { K = "eight", update = "never", KK = 2 }\n'
    )
    found = problems(arena_host, text)
    for expected in (
        "train.warmup: unknown parameter; allowed: epochs, steps",
        "train.batch_size: expected an integer >= 1, got 0",
        "train.loss: expected one of 'per_step', 'rate', 'final', 'final_mse', got 'mse'",
        "methods[2].params.KK: unknown parameter; allowed: K, update",
        "methods[2].params.K: expected an integer >= 1, got 'eight'",
        "methods[2].params.update: expected one of",
    ):
        assert any(line.startswith(expected) for line in found), (expected, found)
    assert len(found) == 6


def test_a_bad_swept_value_is_reported_once(arena_host: PluginHost) -> None:
    text = VALID + '\n[[methods]]\nname = "tbptt"\nparams = { K = [0, 2, 0.5], update = ["batch", "segment"] }\n'
    found = problems(arena_host, text)
    assert found == [
        "methods[2].params.K: expected an integer >= 1, got 0",
        "methods[2].params.K: expected an integer >= 1, got 0.5",
    ]


# -- optimizer --------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["lr", "weight_decay", "momentum"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_optimizer_settings_are_refused(arena_host: PluginHost, key: str, value: str) -> None:
    text = VALID.replace('name = "adam", lr = 0.03', f'name = "sgd", lr = 0.03, {key} = {value}')
    if key == "lr":
        text = VALID.replace('name = "adam", lr = 0.03', f'name = "sgd", lr = {value}')
    bounds = "in [0.0, 1.0]" if key == "momentum" else ">= 0.0"
    assert problems(arena_host, text) == [f"train.optimizer.{key}: expected a finite number {bounds}, got {value}"]


def test_momentum_needs_sgd(arena_host: PluginHost) -> None:
    found = problems(arena_host, VALID.replace("lr = 0.03", "lr = 0.03, momentum = 0.9"))
    assert found == [
        "train.optimizer.momentum: only the sgd optimizer uses momentum, not 'adam'; remove it or set name = 'sgd'"
    ]
    sgd = VALID.replace('name = "adam", lr = 0.03', 'name = "sgd", lr = 0.03, momentum = 0.9')
    assert parse_suite(sgd, arena_host).cells[0].optimizer["momentum"] == 0.9


# -- reading suite files ----------------------------------------------------------------------
def test_a_non_utf8_suite_names_the_path_and_the_byte_offset(host: PluginHost, tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "x"\ndescription = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(SuiteError) as info:
        load_suite(str(path), host)
    assert str(info.value) == (
        f"{path}: not UTF-8 text: byte 0xe9 at offset 29 cannot be decoded; save the file as UTF-8"
    )


def test_a_directory_is_not_reported_as_missing(host: PluginHost, tmp_path: Path) -> None:
    with pytest.raises(SuiteError) as info:
        load_suite(str(tmp_path), host)
    assert str(info.value) == f"{tmp_path}: is a directory (give a .toml file or a shipped suite name)"


# -- repeated variants ------------------------------------------------------------------------
def test_repeated_method_entries_are_named(arena_host: PluginHost) -> None:
    text = VALID + '\n[[methods]]\nname = "tbptt"\nparams = { K = 4 }\n' * 2
    assert problems(arena_host, text) == [
        "methods: methods[2] and methods[3] are the same variant (tbptt K=4); remove the repeat"
    ]


def test_a_default_written_out_is_the_same_variant(arena_host: PluginHost) -> None:
    # {} and { behaviour = "ok" } would record identical method_params: the report would merge them
    text = VALID.replace('behaviour = ["ok", "skip"]', 'behaviour = "ok"') + '\n[[methods]]\nname = "flaky"\n'
    assert problems(arena_host, text) == [
        "methods: methods[1] and methods[2] are the same variant (flaky behaviour=ok); remove the repeat"
    ]


def test_a_sweep_repeating_a_value_is_named(arena_host: PluginHost) -> None:
    text = VALID + '\n[[methods]]\nname = "tbptt"\nparams = { K = [4, 4.0] }\n'
    assert problems(arena_host, text) == [
        "methods: methods[2] gives the same variant 2 times (tbptt K=4); remove the repeat"
    ]


def test_repeated_models_are_named(arena_host: PluginHost) -> None:
    text = VALID.replace('neuron = { name = "lif", params = { tau = 2.0 } }', 'neuron = "lif"') + (
        '\n[[models]]\nname = "mlp"\nparams = { hidden = [16] }\n'
    )
    assert problems(arena_host, text) == [
        "models: models[0] and models[1] are the same variant (mlp hidden=16 / lif / atan); remove the repeat"
    ]


def test_a_dataset_repeated_with_overlapping_T_is_named(arena_host: PluginHost) -> None:
    text = VALID.replace("T = [4]", "T = [4, 8]") + '\n[[datasets]]\nname = "tiny_blobs"\nT = [8, 16]\n'
    assert problems(arena_host, text) == [
        "datasets: datasets[0] and datasets[1] are the same variant (tiny_blobs) and both run T=8; "
        "remove the repeat or give each entry its own T"
    ]
    disjoint = VALID + '\n[[datasets]]\nname = "tiny_blobs"\nT = [8]\n'
    assert parse_suite(disjoint, arena_host).n_cells == 3 * 2 * 2  # 3 methods x (T=4 | T=8) x 2 seeds


# -- huge grids -------------------------------------------------------------------------------
def test_a_million_cell_grid_is_counted_without_expansion(arena_host: PluginHost) -> None:
    text = VALID.replace("seeds = [0, 1]", f"seeds = {list(range(1000))}").replace(
        "T = [4]", f"T = {list(range(1, 335))}"
    )
    tracemalloc.start()
    try:
        suite = parse_suite(text, arena_host)
        n_cells = suite.n_cells
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n_cells == 3 * 334 * 1000
    assert peak < 20 * 2**20, peak  # a materialised grid holds about 1 kB per cell
    first = next(suite.iter_cells())
    assert (first.method, first.T, first.seed) == ("bptt", 1, 0)


def test_cells_are_made_on_demand_in_the_same_order(arena_host: PluginHost) -> None:
    suite = parse_suite(VALID, arena_host)
    streamed = list(suite.iter_cells())
    assert suite.n_cells == len(suite.cells) == len(streamed) == 6
    assert suite.cells == streamed and suite.cells is suite.cells


PINNED = """
name = "pinned"
metrics = []
[train]
steps = 3
loss = "rate"
optimizer = { name = "sgd", lr = 0.1, momentum = 0.5 }
[grid]
seeds = [0, 1]
T = [4, 8]
[[methods]]
name = "bptt"
[[methods]]
name = "tbptt"
params = { K = [2, 4] }
loss = "per_step"
[[models]]
name = "mlp"
params = { hidden = [[8], [8, 4]] }
neuron = { name = "lif", params = { tau = 2.0 }, surrogate = { name = "atan", params = { alpha = 2.0 } } }
[[datasets]]
name = "digits"
params = { encoding = ["rate", "direct"] }
[[datasets]]
name = "randman"
params = { nb_units = 8 }
T = [6]
"""


def test_cell_ids_and_order_do_not_change(host: PluginHost) -> None:
    """Pinned ids: a change of the cell spec (a new resolved ``[train]`` setting, as ``select``) must be
    deliberate, since ``--resume`` finds cells by id. Last re-pinned when ``train.fidelity_points`` came in."""
    suite = parse_suite(PINNED, host)
    ids = [c.cell_id for c in suite.cells]
    assert len(ids) == 80 and ids[:3] == ["b527e559a77d", "66bdf25348c4", "4e46112c0c04"]
    assert hashlib.sha1(",".join(ids[:60]).encode()).hexdigest()[:16] == "b9bd5516b80a7901"
    # tbptt trains with the per-step loss and bptt with the rate loss: the per-step BPTT reference
    # rows come after the suite's own cells, so adding them changed no id
    assert {(c.method, c.loss, str(c.method_params)) for c in suite.cells[60:]} == {("bptt", "per_step", "{}")}
    assert suite.added == (
        "added bptt with loss 'per_step': the reference of 'tbptt K=2' (methods[1]), which trains with that loss",
    )


# -- memory sanity ----------------------------------------------------------------------------
def test_a_T_too_large_for_memory_is_refused_with_the_estimate(host: PluginHost) -> None:
    memory = machine_memory_bytes()
    assert memory is not None and memory > 2**28
    text = PINNED.replace("T = [4, 8]", "T = [4, 100000000]")
    found = problems(host, text)  # one line per dataset variant that runs the grid's T
    assert len(found) == 2 and all(line.startswith("grid.T: T=100000000 needs about ") for line in found)
    assert "for one input batch of digits encoding=rate (T x batch 256 x 64 inputs x 4 bytes)" in found[0]
    assert "more than this machine's memory" in found[0] and "digits encoding=direct" in found[1]
    text = PINNED.replace("T = [6]", "T = [6, 100000000]")
    found = problems(host, text)
    assert len(found) == 1 and found[0].startswith("datasets[1].T: T=100000000 needs about ")
    assert "x 8 inputs" in found[0]


# -- dataset files ----------------------------------------------------------------------------
def test_missing_dataset_files_refuse_the_suite(host: PluginHost, tmp_path: Path) -> None:
    text = (
        PINNED
        + f'\n[[datasets]]\nname = "mnist"\nparams = {{ root = "{tmp_path}" }}\n'
        + (f'\n[[datasets]]\nname = "nmnist"\nparams = {{ root = "{tmp_path}" }}\n')
    )
    found = problems(host, text)
    assert [line.split(":")[0] for line in found] == ["datasets[2]", "datasets[3]"]
    assert found[0].startswith(f"datasets[2]: mnist: data files not found under {tmp_path}")
    assert found[1].startswith(f"datasets[3]: nmnist: data files not found under {tmp_path}")


def test_an_empty_sweep_is_a_problem_not_an_empty_grid(arena_host):
    text = """
name = "empty-sweep"
[train]
steps = 1
[grid]
T = [2]
[[methods]]
name = "tbptt"
params = { K = [] }
[[models]]
name = "mlp"
[[datasets]]
name = "digits"
"""
    with pytest.raises(SuiteError, match=r"methods\[0\]\.params\.K: an empty list sweeps no value"):
        parse_suite(text, arena_host, "s.toml")
