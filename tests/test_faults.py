"""Injected faults: dying workers, and a parent that is killed, terminated or interrupted.

Each test injects its faults through a plugin method (``faulty``) that kills, exits, segfaults or
hangs the process running its cell, and checks that nothing finished is lost, only the cell hit
fails (named, resumable), and no worker outlives its parent.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snnarena.host import HostConfig, PluginHost
from snnarena.results import RunDirectory, load_run
from snnarena.runner import run_suite
from snnarena.suite import parse_suite

pytestmark = pytest.mark.slow

FAULTY_PLUGIN = '''
"""A method that injects a fault into the process running its cell, and a tiny dataset."""
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

import torch

import snnarena
from snnarena.data import DataBundle, Dataset
from snnarena.method import GradientMethod
from snnarena.params import Param
from snnarena.reference import bptt_accumulate


class FaultBlobs(Dataset):
    """Three separable blobs, 48 samples."""

    name = "fault_blobs"

    def build(self, T, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(48) % 3
        x = torch.eye(3, 4)[y] * 2.0 + 0.3 * torch.randn(48, 4, generator=g)
        return DataBundle(x[:36], y[:36], x[36:], y[36:], T=T, n_classes=3, encoding="direct", seed=seed)


class Faulty(GradientMethod):
    """BPTT, or a fault in the process running the cell."""

    name = "faulty"
    PARAMS = (Param("fault", "str", "none", "the fault", choices=("none", "kill", "exit", "segv", "hang")),)

    def accumulate_gradients(self, model, x, y, loss, clock):
        fault = self.params["fault"]
        if fault != "none":
            print(f"faulty: pid {os.getpid()} injects {fault}", file=sys.stderr, flush=True)
            Path(os.environ["FAULT_DIR"], f"{fault}.{os.getpid()}").touch()
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "exit":
            os._exit(7)
        elif fault == "segv":
            ctypes.string_at(0)
        elif fault == "hang":
            time.sleep(300)
        return bptt_accumulate(model, x, y, loss, clock)


@snnarena.hookimpl
def register_gradient_methods(register):
    register(Faulty)


@snnarena.hookimpl
def register_datasets(register):
    register(FaultBlobs)
'''

SUITE = """
name = "faults"
[train]
epochs = 1
batch_size = 12
[grid]
seeds = {seeds}
T = [3]
[[methods]]
name = "faulty"
params = {{ fault = {faults} }}
[[models]]
name = "mlp"
params = {{ hidden = [8] }}
[[datasets]]
name = "fault_blobs"
"""

DRIVER = """
import json, signal, sys
from snnarena.host import HostConfig, PluginHost
from snnarena.runner import run_suite
from snnarena.suite import parse_suite


def main():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even when started in the background
    plugins, suite, results, jobs = sys.argv[1:5]
    host = PluginHost.load(HostConfig(plugins_dirs=(plugins,)))
    spec = parse_suite(open(suite).read(), host, suite)
    outcome = run_suite(spec, host, results_root=results, jobs=int(jobs), device="cpu")
    print(json.dumps({"interrupted": outcome.interrupted, "stopped_by": outcome.stopped_by, "ran": outcome.ran,
                      "run_dir": str(outcome.run_dir)}))


if __name__ == "__main__":
    main()
"""


@pytest.fixture
def faults(tmp_path, monkeypatch):
    """``(plugins folder, marker folder)``; the faulty method touches ``<fault>.<pid>`` in the latter."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "faulty.py").write_text(FAULTY_PLUGIN)
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("FAULT_DIR", str(markers))
    return plugins, markers


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def marker_pids(markers: Path, fault: str) -> list[int]:
    return [int(p.suffix[1:]) for p in markers.glob(f"{fault}.*")]


def start_driver(tmp_path: Path, plugins: Path, suite_text: str, jobs: int) -> subprocess.Popen[str]:
    (tmp_path / "suite.toml").write_text(suite_text)
    (tmp_path / "driver.py").write_text(DRIVER)
    return subprocess.Popen(
        [
            sys.executable,
            str(tmp_path / "driver.py"),
            str(plugins),
            str(tmp_path / "suite.toml"),
            str(tmp_path / "results"),
            str(jobs),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def statuses(run_dir: Path) -> dict[str, tuple[str, str]]:
    results, _ = load_run(run_dir)
    return {json.loads(r.method_params)["fault"] + f"/{r.seed}": (r.status, r.reason) for r in results.itertuples()}


def test_a_dead_worker_fails_only_its_cell(faults, tmp_path, capfd):
    plugins, markers = faults
    host = PluginHost.load(HostConfig(plugins_dirs=(str(plugins),)))
    suite = parse_suite(SUITE.format(seeds="[0]", faults='["none", "kill", "exit", "segv"]'), host)
    outcome = run_suite(suite, host, results_root=tmp_path / "results", jobs=2, device="cpu")
    assert not outcome.interrupted and outcome.ran == 4 and outcome.failed == 3
    got = statuses(outcome.run_dir)
    assert got["none/0"] == ("done", "")
    assert got["kill/0"] == ("failed", "worker process died (SIGKILL) while running this cell")
    assert got["exit/0"] == ("failed", "worker process died (exit code 7) while running this cell")
    assert got["segv/0"] == ("failed", "worker process died (SIGSEGV) while running this cell")
    run_dir = RunDirectory(outcome.run_dir)
    assert len(run_dir.finished_ids()) == 1  # the three others run again on --resume
    for record in run_dir.records():
        if record.row["status"] == "failed":
            assert "died" in run_dir.traceback_path(record.row["cell_id"]).read_text()
    assert not any(alive(pid) for fault in ("kill", "exit", "segv") for pid in marker_pids(markers, fault))
    assert "faulty: pid" in capfd.readouterr().err  # the workers' own output stays visible


def test_killing_the_parent_kills_its_workers(faults, tmp_path):
    plugins, markers = faults
    driver = start_driver(tmp_path, plugins, SUITE.format(seeds="[0, 1]", faults='["hang"]'), jobs=2)
    try:
        wait_for(lambda: len(marker_pids(markers, "hang")) == 2, 90, "two workers running a cell")
        workers = marker_pids(markers, "hang")
        assert all(alive(pid) for pid in workers)
        driver.kill()
        driver.wait(10)
        wait_for(lambda: not any(alive(pid) for pid in workers), 10, f"workers {workers} to die with their parent")
    finally:
        driver.kill()
        driver.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_pool_keeps_every_finished_cell(faults, tmp_path, signum):
    plugins, markers = faults
    driver = start_driver(tmp_path, plugins, SUITE.format(seeds="[0, 1]", faults='["none", "hang"]'), jobs=2)
    try:
        wait_for(lambda: len(marker_pids(markers, "hang")) == 2, 90, "two workers running a hanging cell")
        workers = marker_pids(markers, "hang")
        sent = time.monotonic()
        driver.send_signal(signum)
        out, err = driver.communicate(timeout=30)
        waited = time.monotonic() - sent
    finally:
        driver.kill()
    assert driver.returncode == 0, err
    outcome = json.loads(out.strip().splitlines()[-1])
    name = signal.Signals(signum).name
    assert outcome["interrupted"] and outcome["stopped_by"] == name
    assert waited < 15  # waited for no running cell (each would hang for 300 s)
    assert statuses(Path(outcome["run_dir"])) == {
        "none/0": ("done", ""),
        "none/1": ("done", ""),
        "hang/0": ("failed", f"interrupted ({name})"),
        "hang/1": ("failed", f"interrupted ({name})"),
    }
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the workers to end")


def test_sigterm_stops_a_sequential_run_like_ctrl_c(faults, tmp_path):
    plugins, markers = faults
    driver = start_driver(tmp_path, plugins, SUITE.format(seeds="[0]", faults='["none", "hang"]'), jobs=1)
    try:
        wait_for(lambda: len(marker_pids(markers, "hang")) == 1, 60, "the hanging cell")
        driver.send_signal(signal.SIGTERM)
        out, err = driver.communicate(timeout=30)
    finally:
        driver.kill()
    assert driver.returncode == 0, err
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["interrupted"] and outcome["stopped_by"] == "SIGTERM"
    run_dir = Path(outcome["run_dir"])
    assert statuses(run_dir) == {"none/0": ("done", ""), "hang/0": ("failed", "interrupted (SIGTERM)")}
    assert not list(run_dir.glob(".*.tmp")) and not list((run_dir / "cells").glob(".*.tmp"))
