"""The README's suite example stays valid TOML in the right place when its optional keys are used."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_suite() -> str:
    match = re.search(r"```toml\n(name = \"my-suite\".*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert match is not None, "README.md lost its suite example"
    return match.group(1)


def test_uncommented_metrics_line_is_a_top_level_key():
    text = re.sub(r"^# (metrics = .*)$", r"\1", readme_suite(), flags=re.M)
    data = tomllib.loads(text)
    assert data["metrics"] == ["footprint"]
    assert all("metrics" not in entry for entry in data["datasets"])
