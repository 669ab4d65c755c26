"""The plugin host: entry points, local plugin folders, failures, duplicates, env filters."""

from __future__ import annotations

import json
import textwrap

import pytest
from plugin_fixtures import TestPlugin

from snnarena.cli import main
from snnarena.host import HostConfig, PluginHost
from snnarena.registry import UnknownPluginError

BUILTIN = {
    "neuron": {"lif", "if", "alif"},
    "surrogate": {"sigmoid", "atan", "fast_sigmoid", "triangle", "rectangle", "bellec"},
    "model": {"mlp", "convnet", "rsnn", "lstm"},
    "dataset": {"digits", "mnist1d", "randman", "copy", "adding", "store_recall", "seq_digits"},
    "method": {"bptt", "tbptt", "checkpointed_bptt"},
}


def test_builtins_are_registered_through_entry_points(host):
    for kind, names in BUILTIN.items():
        assert names <= set(host.names(kind)), kind
    entry = host.get("method", "bptt")
    assert entry.distribution == "snnarena" and entry.version
    assert entry.plugin == "bptt"
    assert host.failures == [] and host.warnings == []  # the built-ins load cleanly


def test_registered_test_plugin_is_listed_and_removed(fresh_host):
    fresh_host.add_plugin(TestPlugin(), "test-plugin")
    try:
        assert "tiny_blobs" in fresh_host.names("dataset")
        assert fresh_host.get("method", "flaky").plugin == "test-plugin"
    finally:
        fresh_host.remove_plugin("test-plugin")
    with pytest.raises(UnknownPluginError, match="unknown method 'flaky'; available: .*bptt"):
        fresh_host.get("method", "flaky")


def test_duplicate_name_is_reported_and_first_wins(fresh_host):
    fresh_host.add_plugin(TestPlugin(), "first")
    fresh_host.add_plugin(TestPlugin(), "second")
    assert fresh_host.get("dataset", "tiny_blobs").plugin == "first"
    errors = [f for f in fresh_host.failures if f.plugin == "second"]
    assert errors and "duplicate dataset name 'tiny_blobs'" in errors[0].error


def write_plugins(folder):
    folder.mkdir(exist_ok=True)
    (folder / "good_plugin.py").write_text(
        textwrap.dedent('''
        import snnarena
        from snnarena.method import GradientMethod
        from snnarena.reference import bptt_accumulate

        class Local(GradientMethod):
            """A method from a local plugins folder."""
            name = "local_bptt"
            def accumulate_gradients(self, model, x, y, loss, clock):
                return bptt_accumulate(model, x, y, loss, clock)

        @snnarena.hookimpl
        def register_gradient_methods(register):
            register(Local)
    ''')
    )
    (folder / "broken_plugin.py").write_text("import snnarena\nraise ImportError('missing dependency xyz')\n")
    (folder / "bad_register.py").write_text(
        textwrap.dedent("""
        import snnarena
        @snnarena.hookimpl
        def register_models(register):
            register(object)
    """)
    )


def test_plugins_dir_loads_good_and_reports_broken(tmp_path):
    write_plugins(tmp_path / "plugins")
    host = PluginHost.load(HostConfig(plugins_dirs=(str(tmp_path / "plugins"),)))
    assert host.get("method", "local_bptt").plugin == "local:good_plugin"
    failures = {f.plugin: f.error for f in host.failures}
    assert "missing dependency xyz" in failures["local:broken_plugin"]
    assert "must register subclasses of SpikingModel" in failures["local:bad_register"]
    assert "bptt" in host.names("method")  # the others still load


def test_list_cli_shows_builtins_plugins_dir_and_failures(tmp_path, capsys):
    write_plugins(tmp_path / "plugins")
    assert main(["--plugins-dir", str(tmp_path / "plugins"), "list"]) == 0
    out = capsys.readouterr().out
    assert "local_bptt" in out and "tbptt" in out and "randman" in out
    assert "local:broken_plugin: ImportError: missing dependency xyz" in out
    assert main(["list", "--kind", "surrogate", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {p["name"] for p in data["plugins"]} >= BUILTIN["surrogate"]
    assert all(p["kind"] == "surrogate" for p in data["plugins"])


def test_environment_filters_entry_points(monkeypatch):
    monkeypatch.setenv("SNNARENA_LOAD_PLUGINS", "")
    assert PluginHost.load().entries() == []
    monkeypatch.setenv("SNNARENA_LOAD_PLUGINS", "bptt,neurons")
    host = PluginHost.load()
    assert host.names("method") == ["bptt"] and "lif" in host.names("neuron")
    monkeypatch.delenv("SNNARENA_LOAD_PLUGINS")
    monkeypatch.setenv("SNNARENA_DISABLE_PLUGINS", "tbptt")
    host = PluginHost.load()
    assert "tbptt" not in host.names("method") and "bptt" in host.names("method")
