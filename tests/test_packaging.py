"""What a plain (non-editable) ``pip install .`` gets, and that the README's examples work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from snnarena.host import HostConfig, PluginHost
from snnarena.suite import parse_suite

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


#: Source folder → the import name setup.py ships it under.
LAYOUT = {"snnarena": "snnarena", "plugins": "snnarena_plugins", "suites": "snnarena_suites"}

TINY_SUITE = """
name = "tiny"
[train]
steps = 2
batch_size = 16
fidelity = false
[grid]
T = [4]
[[methods]]
name = "bptt"
[[models]]
name = "mlp"
params = { hidden = [8] }
[[datasets]]
name = "digits"
"""


def source_files() -> list[Path]:
    """The files a clean clone holds (tracked, plus new files git does not ignore)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [Path(name) for name in listed if (ROOT / name).is_file()]


def shipped_names(files: list[Path]) -> set[str]:
    """Where each package file of the source tree must appear in the wheel: every ``.py`` under
    ``snnarena/`` and ``plugins/`` and every suite file, under its mapped import name."""
    out = set()
    for path in files:
        top, rest = path.parts[0], path.parts[1:]
        if top not in LAYOUT or not rest:
            continue
        if path.suffix == ".py" or (top == "suites" and path.suffix == ".toml" and len(rest) == 1):
            out.add("/".join((LAYOUT[top], *rest)))
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built with ``pip wheel`` from a clean copy of the source tree (no stale build/)."""
    base = tmp_path_factory.mktemp("wheel")
    clone = base / "src"
    for path in source_files():
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, clone / path)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base), str(clone)],
        check=True,
    )
    return next(base.glob("snnarena-*.whl"))


def test_wheel_ships_every_source_package_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {n for n in names if ".dist-info/" not in n}
    expected = shipped_names(source_files())
    assert "snnarena/report/__init__.py" in expected and "snnarena_plugins/datasets/digits.py" in expected
    assert "snnarena_suites/quick.toml" in expected
    assert sorted(expected - packaged) == [], "source files missing from the wheel"
    assert sorted(packaged - expected) == [], "files in the wheel that the source tree does not hold"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[snnarena]" in text and "bptt = snnarena_plugins.bptt" in text
    assert "snnarena = snnarena.cli:main" in text


def fresh_venv(path: Path) -> Path:
    """A venv with no pip that sees this interpreter's packages (torch ...) through a ``.pth`` file,
    but not the editable snnarena: a path line in a ``.pth`` file is not scanned for ``.pth`` files,
    so the editable install's finder never runs there. Returns the venv's python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(site) / "_host_packages.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


def test_non_editable_install_runs_a_suite_and_builds_its_report(wheel, tmp_path):
    venv = tmp_path / "venv"
    python = fresh_venv(venv)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)], check=True
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNNARENA_", "PYTHON", "VIRTUAL_ENV"))}
    env["MPLBACKEND"] = "Agg"
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import snnarena, snnarena.report, snnarena_plugins; "
            "print(snnarena.__file__); print(snnarena_plugins.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    ).stdout.split()
    for location in where:
        assert Path(location).is_relative_to(venv), f"{location} is not the wheel's copy in {venv}"

    (tmp_path / "tiny.toml").write_text(TINY_SUITE)
    snnarena_cli = str(venv / "bin" / "snnarena")
    run = subprocess.run(
        [snnarena_cli, "run", "tiny.toml", "--results", "R", "--report-dir", "P"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    (run_dir,) = (tmp_path / "R" / "tiny").iterdir()
    results = pd.read_parquet(run_dir / "results.parquet")
    assert results["status"].tolist() == ["done"], results[["status", "reason"]].to_string()

    report = subprocess.run(
        [snnarena_cli, "report", str(run_dir), "--out", "P2"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert list((tmp_path / "P2").rglob("index.html")), report.stdout


def test_readme_plugin_example_loads_runs_and_conforms(tmp_path):
    blocks = python_blocks((ROOT / "README.md").read_text())
    plugin = next(b for b in blocks if b.startswith("# my_snn_method/__init__.py"))
    conformance = next(b for b in blocks if b.startswith("# tests/test_my_method.py"))
    package = tmp_path / "my_snn_method"
    package.mkdir()
    (package / "__init__.py").write_text(plugin)
    sys.path.insert(0, str(tmp_path))
    try:
        folder = tmp_path / "plugins"
        folder.mkdir()
        (folder / "frozen.py").write_text("from my_snn_method import register_gradient_methods  # noqa: F401\n")
        host = PluginHost.load(HostConfig(plugins_dirs=(str(folder),)))
        assert host.get("method", "frozen_time").plugin == "local:frozen"
        namespace: dict[str, object] = {}
        exec(compile(conformance, "README conformance example", "exec"), namespace)
        namespace["test_frozen_time_conforms"]()  # type: ignore[operator]
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("my_snn_method")]:
            del sys.modules[name]


def test_readme_suite_example_is_valid(host):
    text = (ROOT / "README.md").read_text()
    suite = re.search(r"```toml\n(name = \"my-suite\".*?)```", text, flags=re.S)
    assert suite is not None
    spec = parse_suite(suite.group(1), host, "README.md")
    assert len(spec.cells) == 3 * 2 * 3  # (bptt + tbptt K=4,8) × T ∈ {16, 32} × 3 seeds


@pytest.mark.parametrize("command", [["list"], ["run", "--help"]])
def test_console_script_runs(command):
    out = subprocess.run([sys.executable, "-m", "snnarena", *command], capture_output=True, text=True, check=True)
    assert out.stdout
