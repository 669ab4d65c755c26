"""Declared plugin parameters and their validation.

Every plugin class lists its parameters as ``PARAMS: tuple[Param, ...]``. A suite file is
validated against those declarations before any cell runs, so a typo or an out-of-range value
fails in a second, with a message that names the parameter and what it accepts. Every problem of
a parameter table is reported at once (:attr:`ParamError.problems`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from snnarena.errors import SnnarenaError

ParamKind = Literal["int", "float", "bool", "str", "int_list", "float_list"]

_KIND_WORDS: dict[str, str] = {
    "int": "an integer",
    "float": "a finite number",
    "bool": "true or false",
    "str": "a string",
    "int_list": "a list of integers",
    "float_list": "a list of finite numbers",
}


class ParamError(SnnarenaError, ValueError):
    """Parameter values that their declarations do not accept.

    ``problems`` lists ``(key, message)`` pairs, one per bad key (``key`` is ``""`` for an error
    about one value, raised by :meth:`Param.validate`). ``str(err)`` reads ``key: message`` for
    each problem, joined by ``"; "``.
    """

    def __init__(self, problems: str | Sequence[tuple[str, str]]) -> None:
        self.problems: list[tuple[str, str]] = [("", problems)] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(f"{key}: {message}" if key else message for key, message in self.problems))


@dataclass(frozen=True)
class Param:
    """One declared parameter of a plugin.

    ``low``/``high`` are inclusive bounds (for lists: bounds on each element); ``choices`` is the
    closed set of allowed values; ``default`` of ``None`` with ``required=True`` means the suite
    must give it. A list kind accepts any list of at least ``min_len`` elements (``0``: the empty
    list too). Floats are finite unless ``allow_inf`` (then ``inf``/``-inf`` pass); NaN never does.
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
    min_len: int = 0
    allow_inf: bool = False

    @property
    def is_list(self) -> bool:
        return self.kind.endswith("_list")

    def describe(self) -> str:
        """The accepted values in words, e.g. ``an integer >= 1``."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = _KIND_WORDS[self.kind]
            if self.allow_inf:
                text = text.replace("finite ", "")
            if self.is_list and self.min_len > 0:
                text += f" (at least {self.min_len})"
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

    def default_value(self) -> Any:
        """The default as a suite would give it (a tuple default becomes a fresh list)."""
        return list(self.default) if isinstance(self.default, tuple) else self.default

    def is_default(self, value: Any) -> bool:
        """Whether ``value`` is this parameter's own default (same values, same types)."""
        default = self.default
        if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
            return len(default) == len(value) and all(_same(a, b) for a, b in zip(default, value, strict=True))
        return _same(default, value)

    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to the declared kind, or raise :class:`ParamError`."""
        if value is None and self.nullable:
            return None
        if self.is_list:
            if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
                raise ParamError(f"expected {self.describe()}, got {value!r}")
            scalar = Param(
                self.name,
                cast(ParamKind, self.kind[: -len("_list")]),
                low=self.low,
                high=self.high,
                allow_inf=self.allow_inf,
            )
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
            if math.isnan(value) or (math.isinf(value) and not self.allow_inf):
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


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class ParamSet:
    """The declared parameters of one plugin, with defaults filled in by :meth:`resolve`."""

    declared: tuple[Param, ...] = field(default_factory=tuple)

    def names(self) -> list[str]:
        return [p.name for p in self.declared]

    def get(self, name: str) -> Param | None:
        return next((p for p in self.declared if p.name == name), None)

    def problems(self, given: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Every ``(key, message)`` problem of ``given``: unknown keys, bad values, missing required."""
        names = self.names()
        allowed = ", ".join(names) or "(none)"
        out = [(key, f"unknown parameter; allowed: {allowed}") for key in given if key not in names]
        for p in self.declared:
            if p.name in given:
                try:
                    self._checked(p, given[p.name])
                except ParamError as err:
                    out.append((p.name, str(err)))
            elif p.required:
                out.append((p.name, f"missing required parameter ({p.describe()})"))
        return out

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``given`` and fill in defaults; raises one ``ParamError`` listing every problem.

        Each problem is ``(parameter name, message)``, so callers can prefix the location in a
        suite file. A value equal to the parameter's own default is taken as is, so resolving an
        already resolved table never fails on a key the user did not write.
        """
        problems = self.problems(given)
        if problems:
            raise ParamError(problems)
        return {
            p.name: self._checked(p, given[p.name]) if p.name in given else p.default_value() for p in self.declared
        }

    @staticmethod
    def _checked(p: Param, value: Any) -> Any:
        return p.default_value() if p.is_default(value) else p.validate(value)


def params_of(obj: Any) -> ParamSet:
    """The :class:`ParamSet` a plugin class declares through its ``PARAMS`` attribute."""
    declared: Sequence[Param] = getattr(obj, "PARAMS", ())
    return ParamSet(tuple(declared))
