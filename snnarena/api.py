"""The Python API, mirroring the CLI for notebooks and scripts::

import snnarena
outcome = snnarena.run("quick", only="dataset=digits")
results, curves = snnarena.load(outcome.run_dir)
snnarena.make_report([outcome.run_dir])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from snnarena.host import HostConfig, PluginHost
from snnarena.results import load_run
from snnarena.runner import RunOutcome, run_suite
from snnarena.suite import load_suite


def run(
    suite: str = "quick",
    *,
    jobs: int = 1,
    threads: int = 1,
    only: str | None = None,
    device: str = "auto",
    results_root: str | Path = "results",
    resume: str | Path | None = None,
    force: bool = False,
    plugins_dirs: tuple[str, ...] = (),
    host: PluginHost | None = None,
    executor: str | None = None,
    executor_options: Mapping[str, Any] | None = None,
    data_root: str | Path | None = None,
) -> RunOutcome:
    """Validate and run a suite (a path or a shipped suite name); returns where it was written.

    ``resume`` continues a run directory; ``force`` resumes it even when the suite, the plugin
    versions, the device kind or torch differ from the run's (the manifest records the change).
    ``executor`` names what runs the cells (``local``, ``process``, ``ray``, ``slurm`` or a plugin's),
    with ``executor_options``; ``data_root`` is the folder datasets read their files from (it wins
    over the suite's ``data_root`` and ``$SNNARENA_DATA``).
    """
    host = host or PluginHost.load(HostConfig.from_env(plugins_dirs))
    spec = load_suite(suite, host, data_root=None if data_root is None else str(data_root))
    return run_suite(
        spec,
        host,
        results_root=results_root,
        resume=resume,
        force=force,
        only=only,
        jobs=jobs,
        threads=threads,
        device=device,
        executor=executor,
        executor_options=executor_options,
    )


def load(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(results, curves)`` DataFrames of a run directory."""
    return load_run(run_dir)


def make_report(run_dirs: list[str | Path], out_root: str | Path = "report") -> Path:
    """Build the HTML/Markdown report of one or more run directories; returns index.html."""
    from snnarena.report import build_report

    return build_report(run_dirs, out_root)


def plugins(plugins_dirs: tuple[str, ...] = ()) -> PluginHost:
    """A plugin host with every installed plugin (and the given local plugin folders) loaded."""
    return PluginHost.load(HostConfig.from_env(plugins_dirs))
