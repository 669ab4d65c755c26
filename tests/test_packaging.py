"""What a plain (non-editable) ``pip install .`` gets, and that the README's examples work."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from snnarena.host import HostConfig, PluginHost
from snnarena.suite import parse_suite

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_wheel_ships_builtin_plugins_suites_and_entry_points(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    wheel = next(tmp_path.glob("snnarena-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for plugin in ("bptt", "tbptt", "ottt", "sltt", "ratebp", "tbptt_local", "checkpointed_bptt", "neurons",
                   "surrogates", "models", "metrics"):
        assert f"snnarena_plugins/{plugin}.py" in names
    assert "snnarena_plugins/datasets/randman.py" in names
    assert "snnarena_suites/quick.toml" in names and "snnarena_suites/methods.toml" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[snnarena]" in text and "bptt = snnarena_plugins.bptt" in text
    assert "snnarena = snnarena.cli:main" in text


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
