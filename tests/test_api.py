"""The Python API mirrors the CLI: run a suite, load its tables, build its report."""

from __future__ import annotations

import pytest
from plugin_fixtures import TINY_SUITE

import snnarena
from snnarena.errors import RunDirectoryError


def test_run_load_and_report(arena_host, tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE.format(behaviours='"ok"'))
    outcome = snnarena.run(
        str(suite), only="method=bptt,seed=0", device="cpu", results_root=tmp_path / "results", host=arena_host
    )
    results, curves = snnarena.load(outcome.run_dir)
    assert list(results["status"]) == ["done"] and len(curves) == 2
    for _ in range(2):  # importing snnarena.report must not shadow the API function
        index = snnarena.make_report([outcome.run_dir], tmp_path / "report")
        assert index.is_file() and index.name == "index.html"


def test_run_resumes_an_edited_suite_only_with_force(arena_host, tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE.format(behaviours='"ok"'))
    common = {"only": "method=bptt,seed=0", "device": "cpu", "results_root": tmp_path / "results", "host": arena_host}
    first = snnarena.run(str(suite), **common)
    suite.write_text(TINY_SUITE.format(behaviours='"ok"').replace("lr = 0.03", "lr = 0.04"))
    with pytest.raises(RunDirectoryError, match=r"train.optimizer.lr: 0.03 -> 0.04"):
        snnarena.run(str(suite), resume=first.run_dir, **common)
    again = snnarena.run(str(suite), resume=first.run_dir, force=True, **common)
    assert again.run_dir == first.run_dir and again.ran == 1 and len(again.results) == 2
