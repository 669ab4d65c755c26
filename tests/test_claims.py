"""Paper claims: each check kind on synthetic rows, interval-based verdicts, reduced scale, a
deliberately broken method on a tiny real run, and the ``snnarena claims`` output formats."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pytest
from torch import Tensor

import snnarena
from snnarena.claims import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    UNTESTABLE,
    Check,
    Claim,
    ClaimResult,
    Conditions,
    Measured,
    claim_lines,
    claims_of,
)
from snnarena.claims_cli import add_claims_parser, cmd_claims, format_results
from snnarena.columns import CORE_COLUMNS, columns_by_name
from snnarena.errors import ConfigurationError
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import Update
from snnarena.model import SpikingModel
from snnarena.reference import bptt_accumulate
from snnarena.registry import Register
from snnarena.report.claims_section import Subject, claims_section, decide, evaluate
from snnarena.report.tables import label_rows, load, text
from snnarena.results import rows_frame
from snnarena.runner import run_suite
from snnarena.suite import parse_suite
from snnarena_plugins.tbptt import TBPTT

COLUMNS = columns_by_name(CORE_COLUMNS)
ANY = Conditions("anywhere")
STRING_COLUMNS = (
    "method",
    "method_params",
    "preset",
    "model",
    "model_params",
    "neuron",
    "neuron_params",
    "surrogate",
    "dataset",
    "dataset_params",
    "loss",
    "status",
    "reason",
    "device",
    "optimizer",
)


def row(method: str, T: int, seed: int, params: dict[str, Any] | None = None, **values: Any) -> dict[str, Any]:
    """One finished cell of an mlp on digits (``values`` override any column)."""
    base: dict[str, Any] = {
        "method": method,
        "method_params": json.dumps(params or {}),
        "preset": "",
        "model": "mlp",
        "model_params": "{}",
        "neuron": "lif",
        "neuron_params": "{}",
        "surrogate": "atan",
        "dataset": "digits",
        "dataset_params": "{}",
        "loss": "per_step",
        "optimizer": "adam",
        "lr": 0.01,
        "status": "done",
        "reason": "",
        "device": "cpu",
        "T": T,
        "seed": seed,
        "n_parameters": 1000,
    }
    return {**base, **values}


def labelled(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows as the report loads them (``run``, ``variant``, ``setting`` ...)."""
    frame = rows_frame(rows)
    for column in STRING_COLUMNS:
        frame[column] = frame[column].map(text).astype(object)
    for column in ("T", "seed", "n_parameters", "peak_activation_bytes", "step_time_ms", "test_accuracy"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["run"] = "run"
    return label_rows(frame, multi_run=False)


def verdicts(rows: Sequence[dict[str, Any]], claim: Claim, subject: str = "m") -> list[ClaimResult]:
    return evaluate(labelled(rows), [Subject("method", subject, (claim,))], COLUMNS)


def claim(check: Check, conditions: Conditions = ANY, **params: Any) -> Claim:
    return Claim("c", "a claim", "a paper", "test", check, conditions, params)


MEMORY_RATIO = Check("ratio", "peak_activation_bytes", "<", 0.3, reference="bptt")


def memory_rows(mine: float, T: int = 8, seeds: Sequence[int] = (0,)) -> list[dict[str, Any]]:
    out = []
    for s in seeds:
        out += [row("bptt", T, s, peak_activation_bytes=1000.0), row("m", T, s, peak_activation_bytes=mine)]
    return out


# -- verdict rules ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("measured", "expected"),
    [
        (Measured(0.2, 0.1, 0.25, 3, False), HOLDS),
        (Measured(0.5, 0.4, 0.6, 3, False), FAILS),
        (Measured(0.3, 0.2, 0.4, 3, False), INCONCLUSIVE),  # the interval straddles the threshold
        (Measured(0.2, math.nan, math.nan, 1, False), INCONCLUSIVE),  # one seed of a noisy column
        (Measured(0.2, math.nan, math.nan, 1, True), HOLDS),  # one seed of a deterministic column
        (Measured(0.5, math.nan, math.nan, 1, True), FAILS),
    ],
)
def test_decide_uses_the_whole_interval(measured, expected):
    assert decide(measured, "<", 0.3)[0] == expected


def test_check_needs_a_reference_exactly_for_paired_kinds():
    with pytest.raises(ValueError, match="needs reference"):
        Check("ratio", "step_time_ms", "<", 1.0)
    with pytest.raises(ValueError, match="takes no reference"):
        Check("growth", "step_time_ms", "<", 1.0, reference="bptt")
    with pytest.raises(ValueError, match="kind must be one of"):
        Check("cosine", "step_time_ms", "<", 1.0)  # type: ignore[arg-type]


# -- check kinds -------------------------------------------------------------------------------------------
def test_ratio_to_the_reference_holds_and_does_not_hold():
    assert verdicts(memory_rows(200.0), claim(MEMORY_RATIO))[0].verdict == HOLDS
    result = verdicts(memory_rows(500.0), claim(MEMORY_RATIO))[0]
    assert result.verdict == FAILS
    assert result.measured is not None and result.measured.mean == pytest.approx(0.5)


def test_ratio_pairs_seeds_and_an_interval_straddling_the_threshold_is_inconclusive():
    check = Check("ratio", "step_time_ms", "<", 0.5, reference="bptt")
    rows = []
    for seed, (ref, mine) in enumerate([(10.0, 3.0), (10.0, 6.0), (10.0, 4.0)]):
        rows += [row("bptt", 8, seed, step_time_ms=ref), row("m", 8, seed, step_time_ms=mine)]
    result = verdicts(rows, claim(check))[0]
    assert result.verdict == INCONCLUSIVE
    assert "straddles" in result.reason and result.measured is not None and result.measured.n == 3
    one_seed = verdicts(rows[:2], claim(check))[0]
    assert one_seed.verdict == INCONCLUSIVE and "more seeds" in one_seed.reason


def test_difference_to_a_named_reference_variant():
    check = Check("difference", "test_accuracy", ">=", -0.01, reference="tbptt", reference_params={"K": 4})
    rows = []
    for seed in range(3):
        rows += [
            row("tbptt", 8, seed, {"K": 4}, test_accuracy=0.80 + 0.01 * seed),
            row("tbptt", 8, seed, {"K": 2}, test_accuracy=0.20),
            row("m", 8, seed, test_accuracy=0.85 + 0.01 * seed),
        ]
    result = verdicts(rows, claim(check))[0]
    assert result.verdict == HOLDS
    assert result.measured is not None and result.measured.mean == pytest.approx(0.05)


def test_threshold_on_the_subject_alone_and_its_params():
    check = Check("threshold", "test_accuracy", ">=", 0.9)
    rows = [row("m", 8, s, {"k": k}, test_accuracy=acc) for s in range(3) for k, acc in ((1, 0.95 + s / 100), (2, 0.5))]
    results = verdicts(rows, claim(check, k=1))
    assert [r.verdict for r in results] == [HOLDS]  # only the cells with k=1 are the claim's
    assert [r.verdict for r in verdicts(rows, claim(check, k=2))] == [FAILS]


@pytest.mark.parametrize(("per_step", "expected"), [(0.0, HOLDS), (100.0, FAILS)])
def test_growth_in_T(per_step, expected):
    check = Check("growth", "peak_activation_bytes", "<=", 1.1)
    rows = [row("m", T, 0, peak_activation_bytes=1000.0 + per_step * T) for T in (8, 32)]
    result = verdicts(rows, claim(check))[0]
    assert result.verdict == expected
    assert result.T == "8..32"


def test_slope_in_T_log_log():
    check = Check("slope", "backward_ms", "<", 0.25)
    flat = [row("m", T, s, backward_ms=5.0 + 0.01 * s) for T in (8, 16, 32) for s in range(3)]
    linear = [row("m", T, s, backward_ms=0.1 * T * (1 + 0.01 * s)) for T in (8, 16, 32) for s in range(3)]
    assert verdicts(flat, claim(check))[0].verdict == HOLDS
    result = verdicts(linear, claim(check))[0]
    assert result.verdict == FAILS
    assert result.measured is not None and result.measured.mean == pytest.approx(1.0, abs=0.01)


# -- not testable here, and reduced scale ------------------------------------------------------------------
def test_not_testable_names_what_is_missing():
    assert "no cells of method 'm'" in verdicts([row("bptt", 8, 0)], claim(MEMORY_RATIO))[0].reason
    alone = verdicts([row("m", 8, 0, peak_activation_bytes=1.0)], claim(MEMORY_RATIO))[0]
    assert alone.verdict == UNTESTABLE and "no finished bptt cell" in alone.reason
    gpu = Check("ratio", "peak_device_bytes", "<", 0.1, reference="bptt")
    no_gpu = verdicts([row("bptt", 8, 0), row("m", 8, 0)], claim(gpu))[0]
    assert no_gpu.verdict == UNTESTABLE and no_gpu.reason.startswith("no GPU")
    unmeasured = verdicts([row("m", 8, 0)], claim(Check("threshold", "gdu_rmse", "<", 0.1)))[0]
    assert "not measured in this run" in unmeasured.reason
    one_T = verdicts(
        [row("m", 8, 0, peak_activation_bytes=1.0)], claim(Check("growth", "peak_activation_bytes", "<", 2))
    )
    assert "two or more T" in one_T[0].reason
    skipped = verdicts([row("m", 8, 0, status="skipped", reason="sltt trains feedforward models")], claim(MEMORY_RATIO))
    assert "sltt trains feedforward models" in skipped[0].reason


def test_conditions_that_differ_from_the_run_mark_the_verdict_reduced_scale():
    paper = Conditions("VGG-11 on CIFAR-10, T = 6, GPU", ("cifar10",), ("convnet",), 1_000_000, (6,), "cuda")
    result = verdicts(memory_rows(200.0), claim(MEMORY_RATIO, paper))[0]
    assert result.verdict == HOLDS and result.verdict_text() == "holds (at reduced scale)"
    assert [d.split(" ")[0] for d in result.reduced] == ["dataset", "model", "1,000", "T", "device"]
    same = Conditions("an MLP on digits, T = 8", ("digits",), ("mlp",), 100, (8,))
    assert verdicts(memory_rows(200.0), claim(MEMORY_RATIO, same))[0].reduced == ()


def test_the_T_closest_to_the_papers_is_read():
    rows = memory_rows(100.0, T=8) + memory_rows(500.0, T=64)
    assert verdicts(rows, claim(MEMORY_RATIO, Conditions("T = 6", T=(6,))))[0].T == "8"
    assert verdicts(rows, claim(MEMORY_RATIO))[0].T == "64"  # no T given: the largest


# -- declarations ----------------------------------------------------------------------------------------------
BUILT_IN_CLAIMANTS = (
    "ratebp",
    "ep",
    "sab",
    "dvm",
    "tbptt",
    "ottt",
    "sltt",
    "checkpointed_bptt",
    "tbptt_local",
    "eprop",
)


@pytest.mark.parametrize("name", BUILT_IN_CLAIMANTS)
def test_built_in_methods_declare_claims_shown_by_list(host, name):
    cls = host.get("method", name).obj
    assert claims_of(cls), name
    lines = claim_lines(cls)
    assert lines[0].startswith("claim ") and any(line.strip().startswith("source:") for line in lines)


def test_every_built_in_method_but_the_reference_declares_claims(host, capsys):
    from snnarena.cli import main

    methods = set(host.names("method"))
    assert {m for m in methods if m != "bptt" and not claims_of(host.get("method", m).obj)} == set()
    assert main(["list", "--kind", "method", "--json"]) == 0
    listed = {p["name"]: p["claims"] for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert listed["bptt"] == [] and all(listed[name] for name in BUILT_IN_CLAIMANTS)
    assert {"name", "statement", "source", "evidence", "check", "conditions", "params"} == set(listed["sltt"][0])


# -- a deliberately broken method flips a claim, on a tiny real run ---------------------------------------------
class HoardingTBPTT(TBPTT):
    """tbptt broken on purpose: keeps every step's graph (full BPTT), so its memory grows with T."""

    name = "hoarding_tbptt"

    def unroll(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock, update: Update
    ) -> float:
        value = bptt_accumulate(model, x, y, loss, clock)
        update()
        return value


class BrokenPlugin:
    """A plugin object registering the broken method."""

    @snnarena.hookimpl
    def register_gradient_methods(self, register: Register) -> None:
        register(HoardingTBPTT)


TINY = """
name = "tiny-claims"
[train]
steps = 2
batch_size = 16
loss = "per_step"
fidelity = false
eval_every_epoch = false
timing_warmup = 0
[grid]
seeds = [0]
T = [4, 16]
[[methods]]
name = "tbptt"
params = { K = 2 }
[[methods]]
name = "hoarding_tbptt"
params = { K = 2 }
[[models]]
name = "mlp"
params = { hidden = [8] }
neuron = "lif"
[[datasets]]
name = "digits"
params = { encoding = "rate" }
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from snnarena.host import HostConfig, PluginHost

    host = PluginHost.load(HostConfig())
    host.add_plugin(BrokenPlugin(), "broken-method")
    outcome = run_suite(parse_suite(TINY, host, "tiny.toml"), host, results_root=tmp_path_factory.mktemp("runs"))
    assert not outcome.failed
    return host, outcome.run_dir


def test_a_method_that_keeps_every_step_turns_the_memory_claim_to_does_not_hold(tiny_run):
    host, run_dir = tiny_run
    data = load([run_dir])
    subjects = [Subject("method", n, claims_of(host.get("method", n).obj)) for n in ("tbptt", "hoarding_tbptt")]
    by_method = {r.plugin: r for r in evaluate(data.results, subjects, data.columns)}
    assert by_method["tbptt"].verdict == HOLDS
    assert by_method["hoarding_tbptt"].verdict == FAILS
    assert by_method["hoarding_tbptt"].measured is not None and by_method["hoarding_tbptt"].measured.mean > 2
    section = claims_section(data, subjects)
    assert section is not None and section.title == "Paper claims"


# -- the command ---------------------------------------------------------------------------------------------
def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_claims_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.mark.parametrize("fmt", ["text", "md", "json"])
def test_claims_command_reads_a_run(tiny_run, capsys, fmt):
    _, run_dir = tiny_run
    assert cmd_claims(parse(["claims", "tbptt", "--run", str(run_dir), "--format", fmt])) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        data = json.loads(out)
        assert [c["verdict"] for c in data["claims"]] == [HOLDS] and data["claims"][0]["plugin"] == "tbptt"
    elif fmt == "md":
        assert out.startswith("| plugin | claim |") and "| holds" in out
    else:
        assert "tbptt · memory-bounded-by-K: holds" in out and "1 verdicts: 1 holds" in out


def test_claims_command_refuses_a_plugin_without_claims(tiny_run):
    _, run_dir = tiny_run
    with pytest.raises(ConfigurationError, match="bptt: no loaded method.*plugins with claims: .*tbptt"):
        cmd_claims(parse(["claims", "bptt", "--run", str(run_dir)]))


def test_format_results_shows_reduced_scale_and_reasons():
    paper = Conditions("VGG on CIFAR-10", datasets=("cifar10",))
    results = verdicts(memory_rows(200.0), claim(MEMORY_RATIO, paper))
    results += verdicts([row("bptt", 8, 0)], claim(MEMORY_RATIO))
    text_out = format_results(results, "text")
    assert "holds (at reduced scale)" in text_out and "differs from the paper (VGG on CIFAR-10) in: dataset" in text_out
    assert "not testable here (no cells of method 'm' in this run)" in text_out
    data = json.loads(format_results(results, "json"))
    assert [c["at_reduced_scale"] for c in data["claims"]] == [True, False]


TINY_TBPTT = TINY.replace('name = "hoarding_tbptt"', 'name = "bptt"').replace(
    "params = { K = 2 }\n[[models]]", "[[models]]"
)


@pytest.mark.slow
def test_claims_command_runs_a_suite_and_the_report_has_the_section(tmp_path, capsys):
    from snnarena.report import build_report

    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_TBPTT, encoding="utf-8")
    args = parse(["claims", "tbptt", "--suite", str(suite), "--results", str(tmp_path / "results"), "--format", "json"])
    assert cmd_claims(args) == 0
    (claim_out,) = json.loads(capsys.readouterr().out)["claims"]
    assert claim_out["verdict"] == HOLDS and claim_out["T"] == "4..16"
    (run_dir,) = (tmp_path / "results" / "tiny-claims").iterdir()
    html = build_report([run_dir], tmp_path / "report").read_text(encoding="utf-8")
    assert "Paper claims" in html and "memory-bounded-by-K" in html
