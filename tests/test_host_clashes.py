"""Plugins must not hijack each other: built-ins load first and keep their names (issue 7)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from plugin_fixtures import TINY_SUITE, TestPlugin

import snnarena
from snnarena.cell import run_cell
from snnarena.host import HostConfig, PluginHost
from snnarena.suite import parse_suite

EVIL = '''
import snnarena
from snnarena_plugins.neurons import LeakyIntegrateAndFire as LIF


class FakeLIF(LIF):
    """An installed package's neuron that claims the built-in name."""
    name = "lif"


class EvilNeuron(LIF):
    """A neuron with a name of its own."""
    name = "evil_neuron"


class AlsoEvil(LIF):
    """Registered after the clash: must still load."""
    name = "also_evil"


@snnarena.hookimpl
def register_neurons(register):
    register(EvilNeuron)
    register(FakeLIF)
    register(AlsoEvil)
'''


Installer = Callable[..., None]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Installer]:
    """``install(package, entry_point, source)``: a fake installed distribution declaring a plugin.

    Writes ``package/__init__.py`` plus ``<package>-1.0.dist-info`` (METADATA, entry_points.txt with
    ``[snnarena] <entry_point> = <package>``) in ``tmp_path`` and puts it on ``sys.path``.
    """
    installed: list[str] = []

    def install(package: str, entry_point: str, source: str = EVIL) -> None:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{package}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[snnarena]\n{entry_point} = {package}\n")
        installed.append(package)

    monkeypatch.syspath_prepend(str(tmp_path))
    yield install
    for package in installed:
        sys.modules.pop(package, None)


@pytest.fixture
def evil_host(install: Installer) -> PluginHost:
    install("evil_pkg", "aaa")  # the entry point sorts before every built-in
    return PluginHost.load(HostConfig())


def test_builtin_name_is_kept_and_the_clash_is_reported_against_its_maker(evil_host: PluginHost) -> None:
    lif = evil_host.get("neuron", "lif")
    assert lif.distribution == "snnarena" and lif.plugin == "neurons"
    assert "if" in evil_host.names("neuron")
    # the installed package's other registrations, before and after the clash, still load
    assert evil_host.get("neuron", "evil_neuron").distribution == "evil_pkg"
    assert evil_host.get("neuron", "also_evil").plugin == "aaa"
    failures = {f.plugin: f for f in evil_host.failures}
    assert set(failures) == {"aaa"}
    error = failures["aaa"].error
    assert "duplicate neuron name 'lif'" in error and "plugin 'neurons'" in error and "snnarena" in error
    assert "FakeLIF" in error
    assert "evil_pkg" in failures["aaa"].detail  # the line of the plugin that made the clash
    assert evil_host.plugins["aaa"].registered == [("neuron", "evil_neuron"), ("neuron", "also_evil")]


def test_rows_name_the_builtin_distribution_of_the_neuron_used(evil_host: PluginHost) -> None:
    evil_host.add_plugin(TestPlugin(), "test-plugin")
    spec = parse_suite(TINY_SUITE.format(behaviours='["ok"]'), evil_host, "tiny.toml").cells[0]
    record = run_cell(spec, evil_host, "clash", "cpu")
    assert record.row["status"] == "done", record.row["reason"]
    versions = json.loads(record.row["plugin_versions"])
    assert versions["neuron:lif"]["distribution"] == "snnarena"
    assert versions["neuron:lif"]["plugin"] == "neurons"


def test_entry_point_name_of_a_builtin_is_refused(install: Installer) -> None:
    source = '''
    import snnarena
    from snnarena_plugins.neurons import LeakyIntegrateAndFire as LIF

    class Mine(LIF):
        """A neuron behind an entry point named like a built-in one."""
        name = "mine"

    @snnarena.hookimpl
    def register_neurons(register):
        register(Mine)
    '''
    install("copycat_pkg", "neurons", source)
    host = PluginHost.load(HostConfig())
    assert host.plugins["neurons"].distribution == "snnarena" and "if" in host.names("neuron")
    assert "mine" not in host.names("neuron")
    (failure,) = host.failures
    assert failure.plugin == "copycat_pkg:neurons"
    assert "already taken by distribution snnarena" in failure.error and "rename the entry point" in failure.error


def test_a_refused_register_does_not_abort_the_hook(fresh_host: PluginHost) -> None:
    class Plugin:
        @snnarena.hookimpl
        def register_neurons(self, register):
            from snnarena_plugins.neurons import LeakyIntegrateAndFire as LIF

            register(object)  # not a Neuron
            register(LIF)  # the name 'lif' is taken
            register(LIF, name="lif_again")

    fresh_host.add_plugin(Plugin(), "mixed")
    assert fresh_host.get("neuron", "lif_again").plugin == "mixed"
    assert fresh_host.get("neuron", "lif").plugin == "neurons"
    errors = [f.error for f in fresh_host.failures if f.plugin == "mixed"]
    assert len(errors) == 2
    assert "must register subclasses of Neuron" in errors[0] and "duplicate neuron name 'lif'" in errors[1]
    assert not fresh_host.warnings
