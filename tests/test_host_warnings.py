"""Plugins that load but do nothing are reported as warnings; local plugin versions (issue 7)."""

from __future__ import annotations

import dataclasses
import hashlib
import textwrap
from pathlib import Path

import pytest

from snnarena.host import HostConfig, PluginHost, PluginWarning

METHOD = '''
import snnarena
from snnarena.method import GradientMethod
from snnarena.reference import bptt_accumulate


class {cls}(GradientMethod):
    """A method from a plugin file."""
    name = "{name}"
    def accumulate_gradients(self, model, x, y, loss, clock):
        return bptt_accumulate(model, x, y, loss, clock)
'''


def load_folder(tmp_path: Path, files: dict[str, str]) -> PluginHost:
    folder = tmp_path / "plugins"
    folder.mkdir()
    for name, text in files.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
    return PluginHost.load(HostConfig(plugins_dirs=(str(folder),)))


def warnings_of(host: PluginHost, plugin: str) -> list[str]:
    return [w.message for w in host.warnings if w.plugin == plugin]


def test_misspelled_hook_is_reported_with_the_closest_name(tmp_path: Path) -> None:
    host = load_folder(
        tmp_path,
        {
            "typo": METHOD.format(cls="Typo", name="typo")
            + """
@snnarena.hookimpl
def register_gradient_method(register):
    register(Typo)
"""
        },
    )
    messages = warnings_of(host, "local:typo")
    assert any(
        "register_gradient_method is not a snnarena hook" in m and "did you mean register_gradient_methods?" in m
        for m in messages
    ), messages
    assert any("registered nothing" in m for m in messages), messages
    assert "typo" not in host.names("method")
    assert not host.failures  # a warning, not a failure: the plugin imported fine


def test_register_function_without_hookimpl_is_reported(tmp_path: Path) -> None:
    host = load_folder(
        tmp_path,
        {
            "unmarked": METHOD.format(cls="Unmarked", name="unmarked")
            + """
def register_gradient_methods(register):
    register(Unmarked)
""",
            "unmarked_typo": """
from snnarena.registry import check_registrable as register_imported  # imported names are not the plugin's

def register_neuron(register):
    pass
""",
        },
    )
    (unmarked, nothing) = warnings_of(host, "local:unmarked")
    assert "register_gradient_methods is not marked @snnarena.hookimpl" in unmarked
    assert "did you forget @snnarena.hookimpl?" in unmarked and "did you mean" not in unmarked
    assert "registered nothing: it implements none of the snnarena hooks" in nothing
    (typo, _) = warnings_of(host, "local:unmarked_typo")
    assert "register_neuron is not marked" in typo and "did you mean register_neurons?" in typo


def test_plugin_that_registers_nothing_is_reported(tmp_path: Path) -> None:
    host = load_folder(
        tmp_path,
        {
            "empty": "x = 1\n",
            "silent_hook": """
import snnarena

@snnarena.hookimpl
def register_metrics(register):
    pass
""",
        },
    )
    assert warnings_of(host, "local:empty") == [
        "registered nothing: it implements none of the snnarena hooks (register_neurons, register_surrogates, "
        "register_models, register_datasets, register_gradient_methods, register_metrics, register_executors; "
        "see snnarena.hookspecs)"
    ]
    assert warnings_of(host, "local:silent_hook") == [
        "registered nothing: its hooks ran but never called register(cls)"
    ]


def test_builtins_and_good_plugins_have_no_warnings(tmp_path: Path) -> None:
    host = load_folder(
        tmp_path,
        {
            "good": METHOD.format(cls="Good", name="good")
            + """
@snnarena.hookimpl
def register_gradient_methods(register):
    register(Good)
"""
        },
    )
    assert host.warnings == [] and host.failures == []


def test_plugin_warning_is_a_frozen_value() -> None:
    warning = PluginWarning("local:x", "registered nothing")
    assert warning == PluginWarning("local:x", "registered nothing")
    with pytest.raises(dataclasses.FrozenInstanceError):
        warning.plugin = "other"  # type: ignore[misc]


def test_a_failed_plugin_is_not_also_warned_about(tmp_path: Path) -> None:
    host = load_folder(
        tmp_path,
        {
            "raising": """
import snnarena

@snnarena.hookimpl
def register_models(register):
    raise RuntimeError("cannot build the model list")
"""
        },
    )
    assert [f.plugin for f in host.failures] == ["local:raising"] and host.warnings == []


def test_local_plugin_version_is_its_dunder_version_and_the_digest_is_kept(tmp_path: Path) -> None:
    hook = """
@snnarena.hookimpl
def register_gradient_methods(register):
    register({cls})
"""
    versioned = '__version__ = "2.3.1"\n' + METHOD.format(cls="V", name="versioned") + hook.format(cls="V")
    plain = METHOD.format(cls="P", name="plain") + hook.format(cls="P")
    host = load_folder(tmp_path, {"versioned": versioned, "plain": plain})
    for name, text in (("versioned", versioned), ("plain", plain)):
        digest = hashlib.sha256(textwrap.dedent(text).encode()).hexdigest()[:16]
        info = host.plugins[f"local:{name}"]
        entry = host.get("method", name)
        assert info.digest == entry.digest == digest
        expected = "2.3.1" if name == "versioned" else f"file-{digest}"
        assert info.version == entry.version == expected
    assert host.plugins["bptt"].digest is None
