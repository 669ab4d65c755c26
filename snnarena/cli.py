"""The ``snnarena`` command: list plugins, run suites, build reports, compare and profile runs."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snnarena.claims import Claim, claim_lines, claims_of
from snnarena.compare import DEFAULT_TOLERANCES, GPU_MEMORY_TOLERANCE
from snnarena.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ConfigurationError, SnnarenaError
from snnarena.host import HostConfig, PluginHost
from snnarena.registry import KINDS
from snnarena.task import SCORES

if TYPE_CHECKING:
    from snnarena.method import Preset

#: Exit status when stdout was closed early (``snnarena list | head``): 128 + SIGPIPE, as Unix tools.
EXIT_BROKEN_PIPE = 141
#: ``run`` asks for ``--yes`` above this many cells unless ``--max-cells`` says otherwise.
DEFAULT_MAX_CELLS = 10_000

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK:<4} success
  {EXIT_FAILED:<4} a cell failed (each is listed with the file holding its traceback), or
       compare --fail-on-regression found a regression or a cell done on one side only
  {EXIT_USAGE:<4} the input is wrong (suite, parameter, plugin name, selector, run directory,
       output folder ...): the message names it; nothing ran
  {EXIT_INTERRUPTED:<4} interrupted (Ctrl-C or SIGTERM): finished cells are saved, --resume continues
  {EXIT_BROKEN_PIPE:<4} stdout was closed early (e.g. piped into head)
"""


# -- shared helpers -------------------------------------------------------------------------------
def _plugins_dirs(args: argparse.Namespace) -> tuple[str, ...]:
    """``--plugins-dir`` values given before and after the subcommand, in that order."""
    return (*getattr(args, "plugins_dir_global", ()), *getattr(args, "plugins_dir", ()))


def host_from_args(args: argparse.Namespace) -> PluginHost:
    """The plugin host; a ``--plugins-dir`` folder that is not there is an error (the user named it),
    while one from ``SNNARENA_PLUGINS_DIR`` is reported like any plugin failure."""
    for folder in _plugins_dirs(args):
        if not Path(folder).is_dir():
            what = "is a file, not a folder of plugin files" if Path(folder).exists() else "the folder does not exist"
            raise ConfigurationError(f"--plugins-dir {folder}: {what}")
    return PluginHost.load(HostConfig.from_env(_plugins_dirs(args)))


def positive_int(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _warn_about_plugins(host: PluginHost) -> None:
    """Plugins that failed to load or look wrong, as warnings on stderr."""
    for failure in host.failures:
        print(f"warning: plugin {failure.plugin} failed to load: {failure.error}", file=sys.stderr)
    for warning in host.warnings:
        print(f"warning: plugin {warning.plugin}: {warning.message}", file=sys.stderr)


# -- list -------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from snnarena.params import params_of

    host = host_from_args(args)
    kinds = [args.kind] if args.kind else list(KINDS)
    entries = [e for e in host.entries() if e.kind in kinds]
    if args.json:
        data: dict[str, Any] = {
            "plugins": [
                {
                    "kind": e.kind,
                    "name": e.name,
                    "plugin": e.plugin,
                    "distribution": e.distribution,
                    "version": e.version,
                    "summary": e.summary,
                    "params": [
                        {"name": p.name, "kind": p.kind, "default": p.default, "accepts": p.describe(), "doc": p.doc}
                        for p in params_of(e.obj).declared
                    ],
                    "presets": {name: _preset_data(preset) for name, preset in _presets(e.obj).items()},
                    "claims": [_claim_data(c) for c in claims_of(e.obj)],
                }
                for e in entries
            ],
            "failures": [{"plugin": f.plugin, "error": f.error} for f in host.failures],
            "warnings": [{"plugin": w.plugin, "message": w.message} for w in host.warnings],
        }
        print(json.dumps(data, indent=2, default=str))
        return EXIT_OK
    for kind in kinds:
        group = [e for e in entries if e.kind == kind]
        print(f"{kind}s ({len(group)}):")
        for e in group:
            source = f"{e.distribution or e.plugin} {e.version or ''}".strip()
            print(f"  {e.name:<20} {e.summary}  [{source}]")
            if args.verbose:
                for p in params_of(e.obj).declared:
                    print(f"      {p.name} = {p.default!r}  ({p.describe()}) {p.doc}")
                for name, preset in _presets(e.obj).items():
                    print(f"      preset {e.name}@{name}: {preset.doc}")
                    for line in _preset_lines(preset):
                        print(f"        {line}")
                for line in claim_lines(e.obj):
                    print(f"      {line}")
    if host.failures:
        print("\nplugins that failed to load:")
        for f in host.failures:
            print(f"  {f.plugin}: {f.error}")
    if host.warnings:
        print("\nplugin warnings:")
        for w in host.warnings:
            print(f"  {w.plugin}: {w.message}")
    return EXIT_OK


def _claim_data(claim: Claim) -> dict[str, Any]:
    """A declared claim as JSON data (``snnarena list --json``)."""
    return {
        "name": claim.name,
        "statement": claim.statement,
        "source": claim.source,
        "evidence": claim.evidence,
        "check": claim.check.describe(),
        "conditions": claim.conditions.setting,
        "params": _plain(dict(claim.params)),
    }


def _presets(cls: Any) -> Mapping[str, Preset]:
    """A plugin class's presets (methods declare them; other plugins have none)."""
    presets: Mapping[str, Preset] = getattr(cls, "PRESETS", {})
    return presets


def _plain(value: Any) -> Any:
    """``value`` with every mapping a dict (JSON-ready)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _preset_data(preset: Preset) -> dict[str, Any]:
    """A preset as JSON data: its doc, values and sources."""
    return {f.name: _plain(getattr(preset, f.name)) for f in fields(preset)}


def _preset_values(preset: Preset) -> dict[str, Any]:
    """A preset's values by dotted key, as its ``sources`` cite them (``params.K``, ``neuron.params.tau``)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif value is not None:
            out[prefix] = value

    for f in fields(preset):
        if f.name not in ("doc", "sources"):
            walk(f.name, getattr(preset, f.name))
    return out


def _preset_lines(preset: Preset) -> list[str]:
    """One line per value, ``key = value  [source]`` (the source cited for the key or the nearest
    enclosing one), then any source that cites no single value."""
    values = _preset_values(preset)
    lines = []
    for key, value in values.items():
        cited = next((preset.sources[k] for k in _enclosing(key) if k in preset.sources), None)
        lines.append(f"{key} = {value!r}" + (f"  [{cited}]" if cited else ""))
    used = {k for key in values for k in _enclosing(key)}
    lines.extend(f"source of {k}: {v}" for k, v in preset.sources.items() if k not in used)
    return lines


def _enclosing(key: str) -> list[str]:
    """``a.b.c`` → ``["a.b.c", "a.b", "a"]``."""
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


# -- run --------------------------------------------------------------------------------------------
def _confirm_size(n_cells: int, source: str, max_cells: int, confirmed: bool) -> None:
    """Refuse a grid of more than ``max_cells`` cells unless ``--yes`` confirmed it."""
    if n_cells > max_cells and not confirmed:
        raise ConfigurationError(
            f"{source}: the suite has {n_cells:,} cells, more than --max-cells {max_cells:,}. "
            "Pass --yes to run them all (or --max-cells N to change the limit); or shrink the grid."
        )


def _score_text(row: dict[str, Any]) -> str:
    """The task's test score of a finished cell, e.g. ``acc=0.953``, ``mse=0.0123`` or ``auc=0.91``."""
    for score in SCORES:
        short, value = score.short, row.get(f"test_{score.name}")
        if isinstance(value, float) and math.isfinite(value):
            return f"{short}={value:.4g}"
    return ""


def _tuned(suite: Any, host: PluginHost, device: str, data_root: str | None) -> Any:
    """The suite with the learning rates its ``[tune]`` table chose, printing each unit's choice."""
    from snnarena.cell import run_cell
    from snnarena.executor import data_root_env
    from snnarena.tuning import tune_suite

    tune = suite.tune
    print(f"tuning: {tune.trials} trials per method, model, dataset and T (seed {tune.seed}, lr in {list(tune.lr)})")

    def trial(spec: Any) -> dict[str, Any]:
        with data_root_env(data_root):
            return run_cell(spec, host, "tuning", device).row

    tuned, units = tune_suite(suite, host, trial)
    for unit in units:
        score = next((value for lr, value in unit.trials if lr == unit.best_lr), math.nan)
        print(f"  {unit.unit}: lr = {unit.best_lr:.3g} ({unit.score} {score:.4g} over {len(unit.trials)} trials)")
    return tuned


def _budget_text(suite: Any) -> str:
    """The suite's training budget per cell, and in all, in words (the work the run will do)."""
    first = next(iter(suite.iter_cells()), None)
    if first is None:
        return "no training"
    train = first.train
    if train["steps"] is not None:
        total = train["steps"] * suite.n_cells
        return f"{train['steps']:,} training steps each ({total:,} in all, batch size {train['batch_size']})"
    return f"{train['epochs']} epoch(s) each over the training split (batch size {train['batch_size']})"


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from snnarena.results import RunDirectory, check_writable
    from snnarena.runner import choose_executor, run_suite
    from snnarena.suite import load_suite
    from snnarena.summary import failure_report, summary_table

    if args.force and not args.resume:
        raise ConfigurationError("--force only applies to --resume RUN_DIR (it resumes a run whose suite changed)")
    host = host_from_args(args)
    _warn_about_plugins(host)
    suite = load_suite(args.suite, host, data_root=args.data_root)
    print(f"suite {suite.name}: {suite.n_cells:,} cells, {_budget_text(suite)}")
    for line in suite.added:
        print(f"  {line}")
    _confirm_size(suite.n_cells, suite.source, args.max_cells, args.yes)
    if args.report:
        check_writable(Path(args.report_dir))  # before training, not after it
    executor_options = _executor_options(args.executor_option)
    executor, _ = choose_executor(host, suite, args.executor, executor_options, args.jobs)  # before tuning
    if suite.tune is not None:
        suite = _tuned(suite, host, args.device, suite.data_root)
    bar: Any = None

    def on_start(run: Any, todo: int) -> None:
        nonlocal bar
        print(f"run directory: {run.path} ({todo:,} cell(s) to run, executor {executor.name})")
        bar = tqdm(total=todo, unit="cell", desc=suite.name, file=sys.stderr, dynamic_ncols=True)

    def on_record(record: Any) -> None:
        row = record.row
        tail = _score_text(row) if row.get("status") == "done" else str(row.get("reason", ""))[:60]
        bar.set_postfix_str(f"{row['label']} -> {row['status']} {tail}")
        bar.update(1)

    try:
        outcome = run_suite(
            suite,
            host,
            results_root=args.results,
            resume=args.resume,
            only=args.only,
            jobs=args.jobs,
            threads=args.threads,
            device=args.device,
            force=args.force,
            executor=args.executor,
            executor_options=executor_options,
            on_record=on_record,
            on_start=on_start,
        )
    finally:
        if bar is not None:
            bar.close()
    print(summary_table(outcome.results))
    if outcome.skipped_as_finished:
        print(f"{outcome.skipped_as_finished} cell(s) already finished in this run directory were not rerun")
    print(f"results: {outcome.run_dir / 'results.parquet'}")
    failures = failure_report(outcome.results, RunDirectory(outcome.run_dir))
    if failures:
        print(failures, file=sys.stderr)
    if outcome.interrupted:
        print(f"interrupted: finished cells are saved; continue with --resume {outcome.run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.report:
        from snnarena.report import build_report

        print(f"report: {build_report([outcome.run_dir], args.report_dir)}")
    return EXIT_FAILED if outcome.failed else EXIT_OK


def _executor_options(given: Sequence[str]) -> dict[str, Any]:
    """``--executor-option KEY=VALUE`` values; VALUE is read as a TOML value (``2``, ``0.5``,
    ``true``, ``"gpu"``), and as a string when it is not one (``partition=gpu``)."""
    import tomllib

    options: dict[str, Any] = {}
    for item in given:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--executor-option {item!r}: expected KEY=VALUE, e.g. cpus_per_cell=2")
        try:
            value = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        options[key.strip()] = value
    return options


# -- report, compare, profile -----------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from snnarena.report import build_report

    path = build_report(args.run_dirs, args.out)
    print(f"report: {path}")
    print(f"markdown: {Path(path).with_name('report.md')}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from snnarena.compare import NoiseModel, compare_runs, parse_tolerances, render, summary

    noise = NoiseModel(
        parse_tolerances(args.tolerance),
        args.spread,
        timings_across_machines=args.compare_timings_across_machines,
        iqr_factor=args.iqr,
    )
    comparison = compare_runs(args.run_a, args.run_b, noise)
    if args.format:
        print(render(comparison, args.format))
    elif args.all:
        print(render(comparison, "table"))
    else:
        size = shutil.get_terminal_size((100, 40))
        print(summary(comparison, width=size.columns, max_lines=max(5, size.lines - 12)))
    failures = comparison.gate_failures
    if args.fail_on_regression and len(failures):
        print(f"--fail-on-regression: {len(failures)} regression(s) or cell(s) done on one side only", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_profile(args: argparse.Namespace) -> int:
    from snnarena.cell import CellSkipped, resolve_device
    from snnarena.profiling import profile_cell
    from snnarena.results import RunDirectory
    from snnarena.runner import environment, new_run_id, plugins_manifest, select_cells
    from snnarena.suite import load_suite

    host = host_from_args(args)
    _warn_about_plugins(host)
    suite = load_suite(args.suite, host)
    cells = select_cells(suite.cells, args.only)
    if len(cells) > 1 and not args.first:
        shown = "\n".join(f"  {c.label}" for c in cells[:10])
        raise ConfigurationError(f"--only selects {len(cells)} cells; narrow it to one (or pass --first):\n{shown}")
    if args.run_dir:
        run = RunDirectory(args.run_dir)
        run.manifest()
    else:
        run_id = new_run_id()
        run = RunDirectory(Path(args.results) / suite.name / run_id)
        run.write_manifest(
            {
                "run_id": run_id,
                "suite": suite.name,
                "description": suite.description,
                "source": suite.source,
                "cells": 0,
                "only": args.only,
                "profile_only": True,
                "environment": environment(resolve_device(args.device)),
                "plugins": plugins_manifest(host),
            },
            suite.text,
        )
    out_dir = run.path / "profile" / cells[0].cell_id
    try:
        files = profile_cell(cells[0], host, out_dir, args.steps, args.device)
    except CellSkipped as skipped:
        raise ConfigurationError(f"nothing to profile: {skipped}") from None
    print(f"profiled {cells[0].label}")
    print(f"run directory: {run.path}")
    for name, path in files.items():
        print(f"  {name}: {path}")
    return EXIT_OK


# -- the parser -------------------------------------------------------------------------------------
def _add_global_options(parser: argparse.ArgumentParser, dest: str) -> None:
    """Options every subcommand takes, accepted before and after the subcommand's name."""
    parser.add_argument(
        "--plugins-dir",
        action="append",
        dest=dest,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="load every *.py in DIR as a plugin (repeatable; also SNNARENA_PLUGINS_DIR)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snnarena",
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, "plugins_dir_global")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_global_options(p, "plugins_dir")
        return p

    p = command("list", "list the loaded plugins (and plugins that failed to load or look wrong)")
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="show each plugin's parameters, presets and claims")
    p.set_defaults(func=cmd_list)

    p = command("run", "run a suite (default: the shipped quick suite)")
    p.add_argument("suite", nargs="?", default="quick", help="a suite file, or the name of a shipped suite")
    p.add_argument(
        "--jobs", type=positive_int, default=1, help="cells run in parallel worker processes (the process executor)"
    )
    p.add_argument(
        "--executor",
        metavar="NAME",
        help="what runs the cells: local, process, ray, slurm or a plugin's (default: the suite's [executor], "
        "else process with --jobs > 1, else local); `snnarena list --kind executor -v` lists the options",
    )
    p.add_argument(
        "--executor-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the executor, e.g. address=auto or gpus_per_cell=1 (repeatable; wins over the suite's)",
    )
    p.add_argument(
        "--data-root",
        metavar="PATH",
        help="folder of the datasets' files, for every cell wherever it runs (SNNARENA_DATA; wins over the "
        "suite's data_root)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run: skip its done/skipped cells")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --resume: continue even though the suite, plugins or environment changed",
    )
    p.add_argument("--only", metavar="SELECTOR", help="key=glob[,key=glob] (method, model, dataset, T, seed ...)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch intra-op threads per cell (default 1)")
    p.add_argument("--results", default="results", help="root folder of run directories")
    p.add_argument("--no-report", dest="report", action="store_false", help="do not build the report")
    p.add_argument("--report-dir", default="report")
    p.add_argument("--yes", action="store_true", help="run a suite of more than --max-cells cells")
    p.add_argument(
        "--max-cells",
        type=positive_int,
        default=DEFAULT_MAX_CELLS,
        metavar="N",
        help=f"ask for --yes above N cells (default {DEFAULT_MAX_CELLS:,})",
    )
    p.set_defaults(func=cmd_run)

    p = command("report", "build the HTML/Markdown report of one or more run directories")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="report")
    p.set_defaults(func=cmd_report)

    p = command("compare", "compare run B against run A cell by cell")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 if B is worse beyond the noise model, or a cell is done on one side only",
    )
    defaults = ", ".join(f"{kind}={t.describe()}" for kind, t in DEFAULT_TOLERANCES.items())
    p.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="noise tolerance of a column kind or a column: 10%% relative or 0.01 absolute, in the "
        f"column's unit; repeatable (defaults: {defaults.replace('%', '%%')}; memory "
        f"{GPU_MEMORY_TOLERANCE.describe().replace('%', '%%')} on GPU)",
    )
    p.add_argument(
        "--spread",
        type=float,
        default=2.0,
        metavar="K",
        help="with >= 2 seeds on both sides, a change must also exceed K pooled standard deviations",
    )
    p.add_argument(
        "--iqr",
        type=float,
        default=2.0,
        metavar="K",
        help="a time change must also exceed K x the larger within-cell interquartile range (0: off)",
    )
    p.add_argument(
        "--compare-timings-across-machines",
        action="store_true",
        help="compare time columns even when the runs' device, CPU or GPU differ",
    )
    p.add_argument("--all", action="store_true", help="print every compared row, not just the summary")
    p.add_argument("--format", choices=("table", "csv", "json", "md"), help="print every row in this format")
    p.set_defaults(func=cmd_compare)

    p = command("profile", "profile a few training steps of one cell with torch.profiler")
    p.add_argument("suite")
    p.add_argument("--only", required=True, metavar="SELECTOR")
    p.add_argument("--first", action="store_true", help="profile the first selected cell")
    p.add_argument("--steps", type=positive_int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--results", default="results", help="root folder of run directories")
    p.add_argument("--run-dir", help="write into this run directory's profile/ (default: a new run directory)")
    p.set_defaults(func=cmd_profile)

    from snnarena.claims_cli import add_claims_parser  # it imports this module's helpers

    p = add_claims_parser(sub)
    p.epilog = EXIT_CODES_HELP
    _add_global_options(p, "plugins_dir")
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot raise again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; user errors (:class:`SnnarenaError`) are printed without a traceback."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except SnnarenaError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
