"""Executors: plugins chosen per run, the same run directory whatever runs the cells, resume across
executors, dead workers, the data root, and the Ray and Slurm (submitit) executors.

The Ray tests start one real local Ray cluster (2 CPUs, loopback, no dashboard) for the module; the
Slurm executor runs through submitit's local executor (the same code path minus the scheduler), and
the sbatch script it submits is read back from a stand-in ``sbatch``. Those are marked ``cluster``
(deselect with ``-m 'not cluster'``).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import snnarena
from snnarena.cli import main
from snnarena.errors import EXIT_USAGE, ConfigurationError
from snnarena.executor import ExecutionContext, Executor, execute_job
from snnarena.extras import ExtraMissing
from snnarena.host import HostConfig, PluginHost
from snnarena.results import RunDirectory
from snnarena.runner import choose_executor, run_suite
from snnarena.suite import SuiteError, parse_suite

PLUGIN = '''
"""A tiny dataset that checks the data root its process sees, and a method that can kill its process once."""
import os
import signal
import time
from pathlib import Path

import torch

import snnarena
from snnarena.data import DataBundle, Dataset, data_root
from snnarena.method import GradientMethod
from snnarena.params import Param
from snnarena.reference import bptt_accumulate


class ProbeBlobs(Dataset):
    """Three separable blobs; refuses to build unless the data root is `expect_root` (when given)."""

    name = "probe_blobs"
    PARAMS = (Param("expect_root", "str", "", "the data root the cell's process must see"),)

    def build(self, T, seed):
        expected = self.params["expect_root"]
        if expected and str(data_root()) != expected:
            raise RuntimeError(f"data root {data_root()} != {expected}")
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(48) % 3
        x = torch.eye(3, 4)[y] * 2.0 + 0.3 * torch.randn(48, 4, generator=g)
        return DataBundle(x[:36], y[:36], x[36:], y[36:], T=T, n_classes=3, encoding="direct", seed=seed)


class KillOnce(GradientMethod):
    """BPTT; with `marker` set, the first run of the cell SIGKILLs its own process."""

    name = "kill_once"
    PARAMS = (Param("marker", "str", "", "file whose absence means: kill this process (and create it)"),)

    def accumulate_gradients(self, model, x, y, loss, clock):
        marker = self.params["marker"]
        if marker and not Path(marker).exists():
            Path(marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return bptt_accumulate(model, x, y, loss, clock)


class PreemptOnce(KillOnce):
    """BPTT; with `marker` set, the first run of the cell gets the scheduler's preemption signal."""

    name = "preempt_once"

    def accumulate_gradients(self, model, x, y, loss, clock):
        marker = self.params["marker"]
        if marker and not Path(marker).exists():
            Path(marker).touch()
            os.kill(os.getpid(), signal.SIGUSR2)  # what Slurm (through submitit) sends a preempted job
            time.sleep(30)
        return bptt_accumulate(model, x, y, loss, clock)


@snnarena.hookimpl
def register_datasets(register):
    register(ProbeBlobs)


@snnarena.hookimpl
def register_gradient_methods(register):
    register(KillOnce)
    register(PreemptOnce)
'''

SUITE = """
name = "exec"
{top}
[train]
epochs = 1
batch_size = 12
timing_warmup = 0
fidelity = false

[grid]
seeds = [0, 1]
T = [3]

[[methods]]
name = "bptt"

[[methods]]
name = "kill_once"
params = {{ marker = {markers} }}

[[models]]
name = "mlp"
params = {{ hidden = [8] }}

[[datasets]]
name = "probe_blobs"
params = {{ expect_root = "{root}" }}
"""

#: Columns equal between runs of the same deterministic CPU cells, whatever ran them.
DETERMINISTIC = ("status", "reason", "test_accuracy", "val_accuracy", "train_loss", "spike_rate", "n_parameters")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[PluginHost, Path]:
    """A host with the probe plugin folder, and the data root its cells must see."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "probe.py").write_text(PLUGIN)
    # only the plugins the cells use: every worker process loads the same, quickly
    config = HostConfig(
        plugins_dirs=(str(plugins),), load_only=("bptt", "models", "neurons", "surrogates", "executors")
    )
    return PluginHost.load(config), tmp_path / "data"


def suite_text(root: Path, markers: list[str] | None = None, top: str = "") -> str:
    return SUITE.format(top=top, markers=json.dumps(markers or [""]), root=root)


def by_cell(results: pd.DataFrame) -> pd.DataFrame:
    return results.set_index("cell_id").sort_index()


# -- executors are plugins ------------------------------------------------------------------------
class Reversed(Executor):
    """A lab's own scheduler: runs the cells in this process, last first."""

    name = "reversed"

    def records(self, cells: list[Any]) -> Iterator[Any]:
        for spec in reversed(cells):
            yield execute_job(self.context.job(spec), self.context.host)


class LabPlugin:
    @snnarena.hookimpl
    def register_executors(self, register: Any) -> None:
        register(Reversed)


def test_the_built_in_executors_are_registered_plugins(host):
    assert {"local", "process", "ray", "slurm"} <= set(host.names("executor"))


def test_a_plugin_executor_runs_a_suite_and_writes_the_same_table(setup, tmp_path):
    host, root = setup
    host.add_plugin(LabPlugin(), "lab")
    suite = parse_suite(suite_text(root, top=f'data_root = "{root}"'), host)
    local = run_suite(suite, host, results_root=tmp_path / "a", device="cpu")
    lab = run_suite(suite, host, results_root=tmp_path / "b", device="cpu", executor="reversed")
    assert lab.ran == 4 and lab.failed == 0
    a, b = by_cell(local.results), by_cell(lab.results)
    pd.testing.assert_frame_equal(a[list(DETERMINISTIC)], b[list(DETERMINISTIC)])
    manifest = json.loads((lab.run_dir / "manifest.json").read_text())
    assert manifest["executor"] == {"name": "reversed", "options": {}}
    assert manifest["data_root"] == str(root)


class Cluster(Reversed):
    """A remote scheduler: its workers (here, this process) resolve the device themselves."""

    name = "cluster_stand_in"
    remote = True


class ClusterPlugin:
    @snnarena.hookimpl
    def register_executors(self, register: Any) -> None:
        register(Cluster)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU accepts")
def test_a_gpu_run_is_accepted_on_a_login_node_only_for_remote_executors(setup, tmp_path):
    host, root = setup
    host.add_plugin(ClusterPlugin(), "cluster")
    suite = parse_suite(suite_text(root, top=f'data_root = "{root}"'), host)
    with pytest.raises(ConfigurationError, match="torch sees no CUDA device"):
        run_suite(suite, host, results_root=tmp_path / "a", device="cuda")  # in process: refused before any cell
    outcome = run_suite(suite, host, results_root=tmp_path / "b", device="cuda", executor="cluster_stand_in")
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert manifest["fingerprint"]["device"] == "cuda"
    # each worker resolves the device: here, without a GPU, every cell fails saying so (and --resume reruns it)
    assert set(outcome.results["status"]) == {"failed"}
    assert outcome.results["reason"].str.contains("no CUDA device").all()


def test_the_data_root_reaches_the_cell_and_is_restored(setup, tmp_path, monkeypatch):
    host, root = setup
    monkeypatch.setenv("SNNARENA_DATA", "/elsewhere")
    # the suite's data_root; the cells fail unless their process sees it
    suite = parse_suite(suite_text(root, top='data_root = "/not/this/one"'), host, data_root=str(root))
    outcome = run_suite(suite, host, results_root=tmp_path / "r", device="cpu", only="method=bptt")
    assert set(outcome.results["status"]) == {"done"}
    assert os.environ["SNNARENA_DATA"] == "/elsewhere"
    # without it, the cell sees the environment's root and fails saying so
    plain = parse_suite(suite_text(root), host)
    failed = run_suite(plain, host, results_root=tmp_path / "s", device="cpu", only="method=bptt")
    assert "data root /elsewhere" in failed.results["reason"].iloc[0]


@pytest.mark.slow
def test_a_process_run_resumes_on_the_local_executor(setup, tmp_path):
    host, root = setup
    suite = parse_suite(suite_text(root, top=f'data_root = "{root}"'), host)
    first = run_suite(suite, host, results_root=tmp_path, device="cpu", jobs=2, only="seed=0")
    assert first.ran == 2 and set(first.results["status"]) == {"done"}
    again = run_suite(suite, host, results_root=tmp_path, device="cpu", resume=first.run_dir, executor="local")
    assert again.skipped_as_finished == 2 and again.ran == 2 and set(again.results["status"]) == {"done"}
    resumes = json.loads((first.run_dir / "manifest.json").read_text())["resumes"]
    assert resumes[0]["executor"]["name"] == "local"


# -- options are validated like every parameter ----------------------------------------------------
@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[executor]\nname = "ray"\ncpus_per_cell = -1', "executor.cpus_per_cell: expected a finite number >= 0.0"),
        ('[executor]\nname = "ray"\ncpu_per_cell = 2', "executor.cpu_per_cell: unknown parameter; allowed: address"),
        ('[executor]\nname = "kubernetes"', "executor.name: unknown executor 'kubernetes'; available: local"),
        ('[executor]\nname = "slurm"\ncluster = "pbs"', "executor.cluster: expected one of 'slurm', 'local'"),
        ('executor = "ray"', "executor: expected a table"),
        ("data_root = 3", "data_root: expected the path of the folder"),
    ],
)
def test_bad_executor_tables_name_the_key(setup, table, message):
    host, root = setup
    with pytest.raises(SuiteError) as err:
        parse_suite(suite_text(root, top=table), host, "s.toml")
    assert f"s.toml: {message}" in str(err.value)


def test_command_line_options_win_and_are_checked(setup):
    host, root = setup
    suite = parse_suite(suite_text(root, top='[executor]\nname = "process"\njobs = 3'), host)
    assert choose_executor(host, suite)[1] == {"jobs": 3}
    assert choose_executor(host, suite, options={"jobs": 4})[1] == {"jobs": 4}
    assert choose_executor(host, suite, jobs=2)[1] == {"jobs": 2}
    cls, options = choose_executor(host, suite, "slurm", {"partition": "gpu"})
    assert cls.name == "slurm" and options["partition"] == "gpu" and "jobs" not in options
    with pytest.raises(ConfigurationError, match="--executor-option jobs: expected an integer >= 1, got 0"):
        choose_executor(host, suite, options={"jobs": 0})
    with pytest.raises(ConfigurationError, match="--jobs 2 sets the worker processes of the process executor"):
        choose_executor(host, suite, "ray", jobs=2)


def test_the_cli_refuses_a_bad_executor_option_before_running(setup, tmp_path, capsys):
    host, root = setup
    (tmp_path / "s.toml").write_text(suite_text(root))
    plugins = str(tmp_path / "plugins")
    args = ["run", str(tmp_path / "s.toml"), "--plugins-dir", plugins, "--results", str(tmp_path / "r"), "--no-report"]
    assert main([*args, "--executor", "ray", "--executor-option", "gpus_per_cell=lots"]) == EXIT_USAGE
    assert "--executor-option gpus_per_cell: expected a finite number" in capsys.readouterr().err
    assert main([*args, "--executor-option", "jobs"]) == EXIT_USAGE
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("name", "module", "extra"), [("ray", "ray", "ray"), ("slurm", "submitit", "slurm")])
def test_a_missing_package_names_its_extra(setup, monkeypatch, name, module, extra):
    host, root = setup
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    suite = parse_suite(suite_text(root), host)
    with pytest.raises(ExtraMissing, match=rf'pip install "snnarena\[{extra}\]"'):
        choose_executor(host, suite, name)


# -- Ray ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """One real local Ray cluster for the module: 2 CPUs, loopback only, no dashboard."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.cluster
def test_ray_runs_the_same_table_as_local(setup, tmp_path, ray_cluster):
    host, root = setup
    suite = parse_suite(suite_text(root, top=f'data_root = "{root}"'), host)
    local = run_suite(suite, host, results_root=tmp_path / "local", device="cpu")
    seen: list[str] = []
    on_ray = run_suite(
        suite,
        host,
        results_root=tmp_path / "ray",
        device="cpu",
        executor="ray",
        on_record=lambda r: seen.append(r.row["cell_id"]),
    )
    assert sorted(seen) == sorted(local.results["cell_id"])  # progress counts every cell, wherever it ran
    a, b = by_cell(local.results), by_cell(on_ray.results)
    assert list(a.index) == list(b.index) and set(b["status"]) == {"done"}
    pd.testing.assert_frame_equal(a[list(DETERMINISTIC)], b[list(DETERMINISTIC)])
    assert ray_cluster.is_initialized()  # a cluster it did not start stays up


@pytest.mark.cluster
def test_a_killed_ray_worker_fails_only_its_cell_and_resumes_elsewhere(setup, tmp_path, ray_cluster):
    host, root = setup
    marker = str(tmp_path / "killed-once")
    suite = parse_suite(suite_text(root, markers=[marker], top=f'data_root = "{root}"'), host)
    first = run_suite(suite, host, results_root=tmp_path, device="cpu", executor="ray", only="seed=0")
    rows = by_cell(first.results)
    killed = rows[rows["method"] == "kill_once"]
    assert list(killed["status"]) == ["failed"]
    assert killed["reason"].iloc[0].startswith("Ray task failed (")
    done = rows[rows["method"] == "bptt"]
    assert list(done["status"]) == ["done"]
    run = RunDirectory(first.run_dir)
    kept = {cell_id: run.cell_path(cell_id).read_bytes() for cell_id in done.index}
    assert "--resume runs this cell again" in run.traceback_path(killed.index[0]).read_text()
    # resumed on another executor: the lost cell runs again, the finished one is not touched
    again = run_suite(suite, host, results_root=tmp_path, device="cpu", resume=first.run_dir, only="seed=0")
    assert again.ran == 1 and set(again.results["status"]) == {"done"}
    assert {cell_id: run.cell_path(cell_id).read_bytes() for cell_id in kept} == kept
    assert not run.traceback_path(killed.index[0]).exists()


# -- Slurm (submitit) ----------------------------------------------------------------------------------
@pytest.mark.cluster
def test_slurm_through_submitits_local_executor(setup, tmp_path):
    host, root = setup
    marker = str(tmp_path / "preempted-once")
    suite = parse_suite(suite_text(root, markers=[marker], top=f'data_root = "{root}"'), host)
    options = {"cluster": "local", "poll_s": 0.2}
    first = run_suite(
        suite, host, results_root=tmp_path, device="cpu", executor="slurm", executor_options=options, only="seed=0"
    )
    rows = by_cell(first.results)
    assert sorted(rows["status"]) == ["done", "failed"]
    lost = rows[rows["status"] == "failed"]
    assert lost["method"].iloc[0] == "kill_once" and lost["reason"].iloc[0].startswith("Slurm job ")
    assert "its logs: " in RunDirectory(first.run_dir).traceback_path(lost.index[0]).read_text()
    assert len(list((first.run_dir / "slurm").glob("*/*_log.out"))) == 2  # a job folder with its log per cell
    again = run_suite(
        suite,
        host,
        results_root=tmp_path,
        device="cpu",
        resume=first.run_dir,
        executor="slurm",
        executor_options=options,
        only="seed=0",
    )
    assert again.ran == 1 and set(again.results["status"]) == {"done"}


@pytest.mark.cluster
def test_a_preempted_slurm_job_is_requeued_and_its_cell_runs_again(setup, tmp_path):
    host, root = setup
    marker = tmp_path / "preempted-once"
    text = suite_text(root, markers=[str(marker)], top=f'data_root = "{root}"').replace("kill_once", "preempt_once")
    options = {"cluster": "local", "poll_s": 0.2}
    outcome = run_suite(
        parse_suite(text, host),
        host,
        results_root=tmp_path,
        device="cpu",
        executor="slurm",
        executor_options=options,
        only="method=preempt_once,seed=0",
    )
    assert marker.exists()  # the first run was preempted mid-cell ...
    assert outcome.ran == 1 and list(outcome.results["status"]) == ["done"]  # ... and the requeued job finished it
    (log,) = (outcome.run_dir / "slurm").glob("*/*_log.err")
    assert "preempted" in log.read_text()


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch) -> Path:
    """A stand-in ``sbatch`` on PATH that keeps the script it is given and prints a job id."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kept = tmp_path / "submitted.sh"
    script = bin_dir / "sbatch"
    script.write_text(f'#!/bin/sh\ncp "$1" {kept}\necho "Submitted batch job 4242"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for srun to tell a Slurm cluster
    (bin_dir / "srun").chmod(script.stat().st_mode)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return kept


@pytest.mark.cluster
def test_the_sbatch_script_follows_the_suite_options(setup, tmp_path, fake_sbatch):
    host, root = setup
    table = """[executor]
name = "slurm"
partition = "gpu"
time_limit_min = 90
gpus_per_cell = 1
cpus_per_cell = 4
mem_gb = 16
array_parallelism = 3
account = "lab"
qos = "high"
"""
    suite = parse_suite(suite_text(root, top=table), host)
    cls, options = choose_executor(host, suite)
    context = ExecutionContext(host, "run-1", tmp_path / "run", device="auto", data_root=str(root))
    executor = cls(context, options)
    jobs = executor.submit(suite.cells)  # type: ignore[attr-defined]
    assert [job.job_id for job, _ in jobs] == [f"4242_{i}" for i in range(4)]
    lines = set(fake_sbatch.read_text().splitlines())
    for expected in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16GB",
        "#SBATCH --array=0-3%3",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --nodes=1",
        "#SBATCH --job-name=snnarena-run-1",
    ):
        assert expected in lines, expected
    log = next(line for line in lines if line.startswith("#SBATCH --output="))
    assert log == f"#SBATCH --output={(tmp_path / 'run' / 'slurm').resolve()}/%A_%a/%A_%a_0_log.out"
