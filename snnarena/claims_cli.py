"""``snnarena claims``: check the plugins' paper claims on a run (see :mod:`snnarena.claims`).

Without ``--run`` it runs the shipped claims suites (:data:`CLAIMS_SUITES`, the CPU-scale cells
the built-in plugins' claims need; ``--suite`` names others, such as ``claims-paper-scale`` on a
GPU machine) and evaluates the claims on the new runs; with ``--run DIR`` (repeatable) it only
reads existing run directories. It prints one verdict per claim and group of cells, as text,
Markdown or JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snnarena.claims import UNTESTABLE, ClaimResult
from snnarena.cli import host_from_args, positive_int
from snnarena.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ConfigurationError
from snnarena.host import PluginHost

if TYPE_CHECKING:  # the report's modules (scipy, pandas) load when the command runs, not with the CLI
    from snnarena.report.claims_section import Subject

#: The shipped suites ``snnarena claims`` runs: one per family of tasks (a suite holds one kind).
CLAIMS_SUITES: tuple[str, ...] = ("claims", "claims-long-memory", "claims-equilibrium", "claims-graphs")
FORMATS: tuple[str, ...] = ("text", "md", "json")


def add_claims_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``claims`` subcommand to ``subparsers`` (``ArgumentParser.add_subparsers()``); returns it."""
    about = "check the plugins' paper claims: run the claims suites (or read runs) and print a verdict per claim"
    p: argparse.ArgumentParser = subparsers.add_parser(
        "claims", help=about, description=about, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("methods", nargs="*", metavar="PLUGIN", help="only these methods' (models', neurons') claims")
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="DIR",
        help="evaluate this existing run directory instead of running suites (repeatable)",
    )
    p.add_argument(
        "--suite",
        action="append",
        default=[],
        metavar="SUITE",
        help=f"the suites to run (repeatable; default: {', '.join(CLAIMS_SUITES)})",
    )
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--jobs", type=positive_int, default=1, help="cells run in parallel processes")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--results", default="results", help="root folder of the run directories")
    p.set_defaults(func=cmd_claims)
    return p


def _subjects(host: PluginHost, names: Sequence[str]) -> list[Subject]:
    """The plugins with claims, restricted to ``names``; an unknown or claimless name is refused."""
    from snnarena.report.claims_section import subjects_of

    subjects = subjects_of(host.entries(), names)
    missing = [n for n in names if n not in {s.name for s in subjects}]
    if missing:
        known = ", ".join(sorted({s.name for s in subjects_of(host.entries())}))
        raise ConfigurationError(
            f"snnarena claims: {', '.join(missing)}: no loaded method, model or neuron of that name declares "
            f"claims; plugins with claims: {known}"
        )
    return subjects


def _suites_for(suites: Sequence[str], subjects: Sequence[Subject], host: PluginHost) -> list[Any]:
    """The validated suites that train at least one of ``subjects``."""
    from snnarena.suite import load_suite

    loaded = [load_suite(name, host) for name in suites]
    names = {s.name for s in subjects}
    return [suite for suite in loaded if names & _plugin_names(suite)]


def _plugin_names(suite: Any) -> set[str]:
    """The method, model and neuron names a suite's file names."""
    data = tomllib.loads(suite.text)
    names = {str(m.get("name", "")) for table in ("methods", "models") for m in data.get(table, [])}
    neurons = [m.get("neuron") for m in data.get("models", [])]
    names.update(str(n.get("name", "")) if isinstance(n, dict) else str(n) for n in neurons if n)
    return names


def _run(suites: Sequence[Any], host: PluginHost, args: argparse.Namespace) -> list[Path]:
    from snnarena.runner import run_suite

    run_dirs = []
    for suite in suites:
        print(f"running suite {suite.name}: {suite.n_cells:,} cells", file=sys.stderr)
        outcome = run_suite(suite, host, results_root=args.results, jobs=args.jobs, device=args.device)
        print(f"  run directory: {outcome.run_dir}", file=sys.stderr)
        if outcome.interrupted:
            raise KeyboardInterrupt
        run_dirs.append(outcome.run_dir)
    return run_dirs


def format_results(results: Sequence[ClaimResult], fmt: str) -> str:
    """The verdicts as ``text`` (one block per claim), ``md`` (a table) or ``json``."""
    from snnarena.report.claims_section import TABLE_COLUMNS, VERDICT_NOTE, table_rows, verdict_counts
    from snnarena.report.stats import CONFIDENCE

    if fmt == "json":
        return json.dumps(
            {"confidence": CONFIDENCE, "claims": [r.to_dict() for r in results]}, indent=2, allow_nan=False
        )
    rows = table_rows(results)
    if fmt == "md":
        lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join([*lines, "", VERDICT_NOTE])
    blocks = []
    for r, row in zip(results, rows, strict=True):
        where = ", ".join(x for x in (row[0], r.context, f"T = {r.T}" if r.T else "") if x)
        head = f"{r.plugin} · {r.claim.name}: {r.verdict_text()}"
        lines = [head, f"  claim: {r.claim.statement}", f"  source: {r.claim.source} ({r.claim.evidence})"]
        lines.append(f"  check: {r.claim.check.describe()}" + (f" → {row[6]}" if row[6] else ""))
        if where:
            lines.append(f"  cells: {where}")
        if r.reason and r.verdict != UNTESTABLE:
            lines.append(f"  why: {r.reason}")
        if r.reduced:
            lines.append(f"  differs from the paper ({r.claim.conditions.setting}) in: {'; '.join(r.reduced)}")
        blocks.append("\n".join(lines))
    return "\n\n".join([*blocks, verdict_counts(results), VERDICT_NOTE])


def cmd_claims(args: argparse.Namespace) -> int:
    """Run (or read) the claims' cells and print the verdicts; exit 1 when a cell failed."""
    from snnarena.report.claims_section import evaluate
    from snnarena.report.tables import load

    host = host_from_args(args)
    subjects = _subjects(host, args.methods)
    if args.run and args.suite:
        raise ConfigurationError("snnarena claims: give --run DIR (read runs) or --suite (run suites), not both")
    if args.run:
        run_dirs = [Path(d) for d in args.run]
    else:
        suites = _suites_for(args.suite or CLAIMS_SUITES, subjects, host)
        run_dirs = _run(suites, host, args)
    if not run_dirs:
        raise ConfigurationError("snnarena claims: no suite trains the plugins asked for; give --suite or --run")
    data = load(run_dirs)
    print(format_results(evaluate(data.results, subjects, data.columns), args.format))
    if (data.results["status"] == "failed").any():
        return EXIT_FAILED
    return EXIT_OK


__all__ = ["CLAIMS_SUITES", "EXIT_INTERRUPTED", "add_claims_parser", "cmd_claims", "format_results"]
