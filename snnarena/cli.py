"""The ``snnarena`` command: list plugins, run suites, build reports, compare and profile runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from snnarena.host import HostConfig, PluginHost
from snnarena.registry import KINDS

EXIT_INTERRUPTED = 130


def _host(args: argparse.Namespace) -> PluginHost:
    return PluginHost.load(HostConfig.from_env(tuple(args.plugins_dir or ())))


def cmd_list(args: argparse.Namespace) -> int:
    from snnarena.params import params_of

    host = _host(args)
    kinds = [args.kind] if args.kind else list(KINDS)
    entries = [e for e in host.entries() if e.kind in kinds]
    if args.json:
        data: dict[str, Any] = {
            "plugins": [
                {"kind": e.kind, "name": e.name, "plugin": e.plugin, "distribution": e.distribution,
                 "version": e.version, "summary": e.summary,
                 "params": [{"name": p.name, "kind": p.kind, "default": p.default, "accepts": p.describe(),
                             "doc": p.doc} for p in params_of(e.obj).declared]}
                for e in entries
            ],
            "failures": [{"plugin": f.plugin, "error": f.error} for f in host.failures],
        }
        print(json.dumps(data, indent=2, default=str))
        return 0
    for kind in kinds:
        group = [e for e in entries if e.kind == kind]
        print(f"{kind}s ({len(group)}):")
        for e in group:
            source = f"{e.distribution or e.plugin} {e.version or ''}".strip()
            print(f"  {e.name:<20} {e.summary}  [{source}]")
            if args.verbose:
                for p in params_of(e.obj).declared:
                    print(f"      {p.name} = {p.default!r}  ({p.describe()}) {p.doc}")
    if host.failures:
        print("\nplugins that failed to load:")
        for f in host.failures:
            print(f"  {f.plugin}: {f.error}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from snnarena.runner import SelectorError, run_suite
    from snnarena.suite import SuiteError, load_suite
    from snnarena.summary import summary_table

    host = _host(args)
    for f in host.failures:
        print(f"warning: plugin {f.plugin} failed to load: {f.error}", file=sys.stderr)
    try:
        suite = load_suite(args.suite, host)
    except SuiteError as err:
        print(f"error: invalid suite\n{err}", file=sys.stderr)
        return 2
    bar: Any = None

    def on_start(run: Any, todo: int) -> None:
        nonlocal bar
        print(f"run directory: {run.path}")
        bar = tqdm(total=todo, unit="cell", desc=suite.name, file=sys.stderr, dynamic_ncols=True)

    def on_record(record: Any) -> None:
        row = record.row
        acc = row.get("test_accuracy")
        tail = f"acc={acc:.3f}" if isinstance(acc, float) else row.get("reason", "")[:60]
        bar.set_postfix_str(f"{row['label']} -> {row['status']} {tail}")
        bar.update(1)

    try:
        outcome = run_suite(
            suite, host, results_root=args.results, resume=args.resume, only=args.only, jobs=args.jobs,
            threads=args.threads, device=args.device, on_record=on_record, on_start=on_start,
        )
    except (SelectorError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    print(summary_table(outcome.results))
    if outcome.skipped_as_finished:
        print(f"{outcome.skipped_as_finished} cell(s) already finished in this run directory were not rerun")
    print(f"results: {outcome.run_dir / 'results.parquet'}")
    if outcome.interrupted:
        print(f"interrupted: finished cells are saved; continue with --resume {outcome.run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.report:
        from snnarena.report import build_report

        print(f"report: {build_report([outcome.run_dir], args.report_dir)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from snnarena.report import build_report

    try:
        path = build_report(args.run_dirs, args.out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    print(f"markdown: {Path(path).with_name('report.md')}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from snnarena.compare import compare_runs, regressions

    try:
        frame = compare_runs(args.run_a, args.run_b)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with_pandas_display(lambda: print(frame.to_string(index=False)))
    worse = regressions(frame)
    if len(worse):
        print(f"\n{len(worse)} regression(s) beyond the seed spread:")
        with_pandas_display(lambda: print(worse.to_string(index=False)))
    return 1 if (args.fail_on_regression and len(worse)) else 0


def cmd_profile(args: argparse.Namespace) -> int:
    from snnarena.profiling import CellSkipped, profile_cell
    from snnarena.results import RunDirectory
    from snnarena.runner import SelectorError, environment, new_run_id, plugins_manifest, select_cells
    from snnarena.cell import resolve_device
    from snnarena.suite import SuiteError, load_suite

    host = _host(args)
    try:
        suite = load_suite(args.suite, host)
        cells = select_cells(suite.cells, args.only)
    except (SuiteError, SelectorError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(cells) > 1 and not args.first:
        print(f"error: --only selects {len(cells)} cells; narrow it to one (or pass --first):", file=sys.stderr)
        for c in cells[:10]:
            print(f"  {c.label}", file=sys.stderr)
        return 2
    if args.run_dir:
        run = RunDirectory(args.run_dir)
        try:
            run.manifest()
        except FileNotFoundError as err:
            print(f"error: --run-dir: {err}", file=sys.stderr)
            return 2
    else:
        run_id = new_run_id()
        run = RunDirectory(Path(args.results) / suite.name / run_id)
        run.write_manifest(
            {"run_id": run_id, "suite": suite.name, "description": suite.description, "source": suite.source,
             "cells": 0, "only": args.only, "profile_only": True,
             "environment": environment(resolve_device(args.device)), "plugins": plugins_manifest(host)},
            suite.text,
        )
    out_dir = run.path / "profile" / cells[0].cell_id
    try:
        files = profile_cell(cells[0], host, out_dir, args.steps, args.device)
    except CellSkipped as err:
        print(f"error: nothing to profile: {err}", file=sys.stderr)
        return 2
    print(f"profiled {cells[0].label}")
    print(f"run directory: {run.path}")
    for name, path in files.items():
        print(f"  {name}: {path}")
    return 0


def with_pandas_display(fn: Any) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 50):
        fn()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snnarena", description=__doc__)
    parser.add_argument("--plugins-dir", action="append", metavar="DIR",
                        help="load every *.py in DIR as a plugin (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the loaded plugins")
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="show each plugin's parameters")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run a suite (default: the shipped quick suite)")
    p.add_argument("suite", nargs="?", default="quick", help="a suite file, or the name of a shipped suite")
    p.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run: skip its done/skipped cells")
    p.add_argument("--only", metavar="SELECTOR", help="key=glob[,key=glob] (method, model, dataset, T, seed ...)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per cell (default 1)")
    p.add_argument("--results", default="results", help="root folder of run directories")
    p.add_argument("--no-report", dest="report", action="store_false", help="do not build the report")
    p.add_argument("--report-dir", default="report")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="build the HTML/Markdown report of one or more run directories")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="report")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="compare two run directories cell by cell")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 if B is worse beyond the seed spread")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("profile", help="profile a few training steps of one cell with torch.profiler")
    p.add_argument("suite")
    p.add_argument("--only", required=True, metavar="SELECTOR")
    p.add_argument("--first", action="store_true", help="profile the first selected cell")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--results", default="results", help="root folder of run directories")
    p.add_argument("--run-dir", help="write into this run directory's profile/ (default: a new run directory)")
    p.set_defaults(func=cmd_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for option in ("jobs", "threads"):
        if getattr(args, option, 1) < 1:
            print(f"error: --{option} must be >= 1", file=sys.stderr)
            return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
