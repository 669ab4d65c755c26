"""The benchmark scripts in benchmarks/ run end to end at tiny sizes (so they cannot rot).

Each script's ``main(argv)`` runs with one or two repeats; the checks are on what they return and
print, not on timings. Missing peer libraries must give a "not installed" row, never a crash.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_peers_runs_and_every_peer_is_measured_or_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    peers = load("peers")
    out = peers.main(["--sizes", "3,4,8", "--repeats", "1", "--warmup", "0", "--threads", "1"])
    results = out[(3, 4, 8)]
    assert {r.name for r in results} == set(peers.PEERS)
    for r in results:
        assert r.missing.startswith("not installed") or (len(r.times_ms) == 1 and r.saved_bytes > 0), r
    printed = capsys.readouterr().out
    assert "spike check" in printed and "floor" in printed


def test_peers_reports_a_missing_library_instead_of_crashing(monkeypatch: pytest.MonkeyPatch) -> None:
    peers = load("peers")

    def absent(layers: object) -> object:
        raise ModuleNotFoundError("No module named 'norse'", name="norse")

    monkeypatch.setitem(peers.PEERS, "norse", absent)
    nets, missing = peers.build_peers(["snnarena", "norse"], peers.initial_layers(8, 0), "cpu")
    assert [n.name for n in nets] == ["snnarena"]
    assert missing == {"norse": "not installed (norse)"}


def test_peers_compute_the_same_spikes() -> None:
    peers = load("peers")
    nets, _ = peers.build_peers(list(peers.PEERS), peers.initial_layers(16, 0), "cpu")
    x, _ = peers.make_batch(5, 4, "cpu", 1)
    _, worst = peers.spike_check(nets, x)
    assert worst == 0.0


def test_methods_time_runs(capsys: pytest.CaptureFixture[str]) -> None:
    methods_time = load("methods_time")
    out = methods_time.main(
        [
            "--sizes",
            "methods",
            "--threads",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--methods",
            "bptt,sltt,ottt A",
            "--long-T",
            "12",
            "--long-repeats",
            "1",
        ]
    )
    labels = [r.label for r in out["methods/1"]]
    assert labels == ["bptt", "ottt A", "sltt", "floor"]
    assert all(len(r.clock.steps) == 1 for r in out["methods/1"])
    long = {r.label.split(" m=")[0]: r for r in out["long"]}
    assert long["checkpointed hsm"].peak_saved < long["bptt"].peak_saved
    assert "× bptt" in capsys.readouterr().out


def test_harness_overhead_runs(capsys: pytest.CaptureFixture[str]) -> None:
    harness = load("harness_overhead")
    (row,) = harness.main(["--steps", "3", "--warmup", "1", "--modes", "multi", "--T", "4", "--batch", "8"])
    assert row.cell_ms > 0 and row.bare_ms > 0 and row.metered_ms > 0
    assert "cell/bare" in capsys.readouterr().out
