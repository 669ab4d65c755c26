"""Declared plugin parameters and their validation.

Every plugin class lists its parameters as ``PARAMS: tuple[Param, ...]``. A suite file is
validated against those declarations before any cell runs, so a typo or an out-of-range value
fails in a second, with a message that names the parameter and what it accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from snnarena.errors import SnnarenaError

ParamKind = Literal["int", "float", "bool", "str", "int_list", "float_list"]

_KIND_WORDS: dict[str, str] = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "int_list": "a list of integers",
    "float_list": "a list of numbers",
}


class ParamError(SnnarenaError, ValueError):
    """A parameter value that its declaration does not accept."""


@dataclass(frozen=True)
class Param:
    """One declared parameter of a plugin.

    ``low``/``high`` are inclusive bounds (for lists: bounds on each element); ``choices`` is the
    closed set of allowed values; ``default`` of ``None`` with ``required=True`` means the suite
    must give it.
    """

    name: str
    kind: ParamKind
    default: Any = None
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    required: bool = False
    nullable: bool = False

    @property
    def is_list(self) -> bool:
        return self.kind.endswith("_list")

    def describe(self) -> str:
        """The accepted values in words, e.g. ``an integer >= 1``."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = _KIND_WORDS[self.kind]
            bound = ""
            if self.low is not None and self.high is not None:
                bound = f"in [{self.low}, {self.high}]"
            elif self.low is not None:
                bound = f">= {self.low}"
            elif self.high is not None:
                bound = f"<= {self.high}"
            if bound:
                text += (", each " if self.is_list else " ") + bound
        if self.nullable:
            text += " or null"
        return text

    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to the declared kind, or raise :class:`ParamError`."""
        if value is None and self.nullable:
            return None
        if self.is_list:
            if not isinstance(value, (list, tuple)) or not value:
                raise ParamError(f"expected {self.describe()}, got {value!r}")
            scalar = Param(self.name, self.kind[: -len("_list")], low=self.low, high=self.high)  # type: ignore[arg-type]
            try:
                return [scalar._validate_scalar(v) for v in value]
            except ParamError:
                raise ParamError(f"expected {self.describe()}, got {value!r}") from None
        checked = self._validate_scalar(value)
        if self.choices is not None and checked not in self.choices:
            raise ParamError(f"expected {self.describe()}, got {value!r}")
        return checked

    def _validate_scalar(self, value: Any) -> Any:
        bad = ParamError(f"expected {self.describe()}, got {value!r}")
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise bad
            value = int(value)
        else:
            value = float(value)
            if value != value:  # NaN
                raise bad
        if self.low is not None and value < self.low:
            raise bad
        if self.high is not None and value > self.high:
            raise bad
        return value

    def is_sweep(self, value: Any) -> bool:
        """Whether a suite value is a list of alternatives (swept) rather than one value."""
        if not isinstance(value, list):
            return False
        if self.is_list:
            return bool(value) and all(isinstance(v, list) for v in value)
        return True


@dataclass(frozen=True)
class ParamSet:
    """The declared parameters of one plugin, with defaults filled in by :meth:`resolve`."""

    declared: tuple[Param, ...] = field(default_factory=tuple)

    def names(self) -> list[str]:
        return [p.name for p in self.declared]

    def get(self, name: str) -> Param | None:
        return next((p for p in self.declared if p.name == name), None)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``given`` and fill in defaults; raises ``ParamError`` naming the parameter.

        The error message starts with the parameter name followed by ``: `` so callers can
        prefix the location in a suite file.
        """
        unknown = sorted(set(given) - set(self.names()))
        if unknown:
            allowed = ", ".join(self.names()) or "(none)"
            raise ParamError(f"{unknown[0]}: unknown parameter; allowed: {allowed}")
        out: dict[str, Any] = {}
        for p in self.declared:
            if p.name in given:
                try:
                    out[p.name] = p.validate(given[p.name])
                except ParamError as err:
                    raise ParamError(f"{p.name}: {err}") from None
            elif p.required:
                raise ParamError(f"{p.name}: missing required parameter ({p.describe()})")
            else:
                out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
        return out


def params_of(obj: Any) -> ParamSet:
    """The :class:`ParamSet` a plugin class declares through its ``PARAMS`` attribute."""
    declared: Sequence[Param] = getattr(obj, "PARAMS", ())
    return ParamSet(tuple(declared))
