"""The code stays lint-clean, formatted and type-checked: ruff and mypy run as part of the tests.

Their configuration is in ``pyproject.toml``; both come with the ``test`` extra. Each test runs the
tool on the source tree and shows its findings when it fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_TREES = ("snnarena", "plugins", "tests", "benchmarks", "docs", "setup.py")


def tool(name: str) -> str:
    """The tool installed beside this interpreter (the test extra), else the one on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the test extra: pip install -e '.[test]'")
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_finds_no_lint_problem():
    out = run(tool("ruff"), "check", "--output-format", "concise", *PYTHON_TREES)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_leaves_every_file_unchanged():
    out = run(tool("ruff"), "format", "--check", *PYTHON_TREES)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_type_checks_the_host():
    out = run(tool("mypy"))
    assert out.returncode == 0, out.stdout + out.stderr
