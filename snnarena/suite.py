"""Suite files: load a TOML suite, validate it against the loaded plugins, expand it into cells.

A suite is a grid: every method variant × model variant × dataset variant × ``T`` × seed is one
:class:`CellSpec`, trained under the suite's one ``[train]`` budget. A list value of a plugin
parameter is swept; a scalar is fixed (for list-valued parameters such as ``hidden``, a list of
lists is swept). Every error is found before any cell runs and names the file, the key and what
it accepts, e.g. ``suites/quick.toml: methods[1].params.K: expected an integer >= 1, got 'eight'``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from snnarena.errors import SnnarenaError
from snnarena.loss import LOSS_FORMS
from snnarena.params import Param, ParamError, ParamSet, params_of
from snnarena.host import PluginHost
from snnarena.registry import Kind, UnknownPluginError

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "adamax", "sgd")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

TRAIN_PARAMS = ParamSet(
    (
        Param("epochs", "int", None, "passes over the training split", low=1, nullable=True),
        Param("steps", "int", None, "optimizer steps in total (instead of epochs)", low=1, nullable=True),
        Param("batch_size", "int", 64, "training batch size", low=1),
        Param("eval_batch_size", "int", 256, "evaluation batch size", low=1),
        Param("loss", "str", "per_step", "training objective", choices=LOSS_FORMS),
        Param("timing_warmup", "int", 2, "training steps excluded from the step-time median", low=0),
        Param("fidelity", "bool", True, "measure the gradient's agreement with BPTT"),
        Param("eval_every_epoch", "bool", True, "record test accuracy after every epoch"),
    )
)
OPTIMIZER_PARAMS = ParamSet(
    (
        Param("name", "str", "adam", "optimizer", choices=OPTIMIZERS),
        Param("lr", "float", 1e-3, "learning rate", low=0.0),
        Param("weight_decay", "float", 0.0, "L2 penalty", low=0.0),
        Param("momentum", "float", 0.0, "momentum (sgd only)", low=0.0, high=1.0),
    )
)
_TOP_KEYS = ("name", "description", "train", "grid", "methods", "models", "datasets", "metrics")


class SuiteError(SnnarenaError, ValueError):
    """A suite file that cannot run; ``problems`` lists every problem found, one per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


@dataclass(frozen=True)
class CellSpec:
    """One cell of a suite: everything needed to train and measure it, JSON-serialisable."""

    suite: str
    method: str
    method_params: dict[str, Any]
    model: str
    model_params: dict[str, Any]
    neuron: str
    neuron_params: dict[str, Any]
    surrogate: str
    surrogate_params: dict[str, Any]
    dataset: str
    dataset_params: dict[str, Any]
    T: int
    seed: int
    loss: str
    train: dict[str, Any]
    optimizer: dict[str, Any]
    metrics: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = list(self.metrics)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellSpec:
        return cls(**{**data, "metrics": tuple(data.get("metrics", ()))})

    @property
    def cell_id(self) -> str:
        """A stable id: the hash of everything that defines the cell (used by ``--resume``)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """Human-readable, e.g. ``tbptt[K=4] | mlp/lif | digits | T=16 | seed=0``."""

        def tag(name: str, params: Mapping[str, Any]) -> str:
            if not params:
                return name
            inner = ",".join(f"{k}={_short(v)}" for k, v in params.items())
            return f"{name}[{inner}]"

        return " | ".join(
            (
                tag(self.method, self.method_params),
                f"{self.model}/{self.neuron}",
                tag(self.dataset, self.dataset_params),
                f"T={self.T}",
                f"seed={self.seed}",
            )
        )

    def field_value(self, key: str) -> str:
        """The value a selector key (``method``, ``dataset``, ``T`` ...) is matched against."""
        return str(getattr(self, key))


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return str(value)


@dataclass
class SuiteSpec:
    """A validated suite: its cells plus the original text (copied into the run directory)."""

    name: str
    description: str
    source: str
    text: str
    cells: list[CellSpec] = field(default_factory=list)


# -- locating and reading -------------------------------------------------------------------
def shipped_suites() -> dict[str, str]:
    """Suites shipped inside the package: name → TOML text."""
    folder = resources.files("snnarena_suites")
    return {
        p.name[: -len(".toml")]: p.read_text(encoding="utf-8")
        for p in folder.iterdir()
        if p.name.endswith(".toml")
    }


def read_suite_text(suite: str) -> tuple[str, str]:
    """``(source, text)`` for a suite given as a path or as the name of a shipped suite."""
    path = Path(suite)
    if path.is_file():
        return str(path), path.read_text(encoding="utf-8")
    shipped = shipped_suites()
    if suite in shipped:
        return f"{suite} (shipped suite)", shipped[suite]
    available = ", ".join(sorted(shipped)) or "(none)"
    raise SuiteError(suite, [f"no such file, and no shipped suite of that name; shipped suites: {available}"])


def load_suite(suite: str, host: PluginHost) -> SuiteSpec:
    """Read, validate and expand ``suite`` (a path or a shipped suite name)."""
    source, text = read_suite_text(suite)
    return parse_suite(text, host, source)


def parse_suite(text: str, host: PluginHost, source: str = "<suite>") -> SuiteSpec:
    """Validate TOML ``text`` against ``host``'s plugins and expand it into cells."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(source, [f"not valid TOML: {err}"]) from None
    return _Validator(host, source).run(data, text)


# -- validation -----------------------------------------------------------------------------
class _Validator:
    def __init__(self, host: PluginHost, source: str) -> None:
        self.host = host
        self.source = source
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def run(self, data: dict[str, Any], text: str) -> SuiteSpec:
        for key in data:
            if key not in _TOP_KEYS:
                self.problem(key, f"unknown key; allowed: {', '.join(_TOP_KEYS)}")
        name = data.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            self.problem("name", f"expected a name of letters, digits, '-', '_' or '.', got {name!r}")
            name = "suite"
        description = data.get("description", "")
        if not isinstance(description, str):
            self.problem("description", f"expected a string, got {description!r}")
        train, optimizer = self.train(data.get("train", {}))
        seeds, Ts = self.grid(data.get("grid"))
        methods = self.entries(data, "methods", "method")
        models = self.entries(data, "models", "model")
        datasets = self.entries(data, "datasets", "dataset")
        metrics = self.metrics(data.get("metrics", []))
        if self.problems:
            raise SuiteError(self.source, self.problems)

        cells: list[CellSpec] = []
        for method, model, dataset in itertools.product(methods, models, datasets):
            loss = method["loss"] or train["loss"]
            train_cfg = {k: v for k, v in train.items() if k != "loss"}
            for T, seed in itertools.product(dataset["T"] or Ts, seeds):
                cells.append(
                    CellSpec(
                        suite=name, method=method["name"], method_params=method["params"],
                        model=model["name"], model_params=model["params"],
                        neuron=model["neuron"]["name"], neuron_params=model["neuron"]["params"],
                        surrogate=model["surrogate"]["name"], surrogate_params=model["surrogate"]["params"],
                        dataset=dataset["name"], dataset_params=dataset["params"],
                        T=T, seed=seed, loss=loss, train=train_cfg, optimizer=optimizer,
                        metrics=tuple(metrics),
                    )
                )
        ids = [c.cell_id for c in cells]
        if len(set(ids)) != len(ids):
            raise SuiteError(self.source, ["the grid lists the same cell twice (check repeated entries)"])
        return SuiteSpec(name=name, description=description, source=self.source, text=text, cells=cells)

    def train(self, raw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if not isinstance(raw, dict):
            self.problem("train", f"expected a table, got {raw!r}")
            raw = {}
        raw = dict(raw)
        optimizer_raw = raw.pop("optimizer", {})
        resolved = self.resolve(TRAIN_PARAMS, raw, "train")
        train = resolved or TRAIN_PARAMS.resolve({})
        if resolved is not None and train["epochs"] is None and train["steps"] is None:
            self.problem("train", "give a budget: epochs = N or steps = N")
        elif train["epochs"] is not None and train["steps"] is not None:
            self.problem("train", "give either epochs or steps, not both")
        if isinstance(optimizer_raw, str):
            optimizer_raw = {"name": optimizer_raw}
        if not isinstance(optimizer_raw, dict):
            self.problem("train.optimizer", f"expected a table such as {{ name = 'adam', lr = 1e-3 }}, got {optimizer_raw!r}")
            optimizer_raw = {}
        optimizer = self.resolve(OPTIMIZER_PARAMS, optimizer_raw, "train.optimizer") or {}
        return train, optimizer

    def grid(self, raw: Any) -> tuple[list[int], list[int]]:
        if not isinstance(raw, dict):
            self.problem("grid", "missing table [grid] with T = [...] (and optionally seeds = [...])")
            return [0], [1]
        for key in raw:
            if key not in ("seeds", "T"):
                self.problem(f"grid.{key}", "unknown key; allowed: seeds, T")
        seeds = self.int_list(raw.get("seeds", [0]), "grid.seeds", low=0)
        if "T" not in raw:
            self.problem("grid.T", "missing; give the numbers of time steps, e.g. T = [16]")
        Ts = self.int_list(raw.get("T", [1]), "grid.T", low=1)
        return seeds, Ts

    def int_list(self, value: Any, where: str, low: int) -> list[int]:
        values = value if isinstance(value, list) else [value]
        ok = values and all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in values)
        if not ok:
            self.problem(where, f"expected an integer >= {low} or a list of them, got {value!r}")
            return [low]
        if len(set(values)) != len(values):
            self.problem(where, f"lists a value twice: {value!r}")
        return list(values)

    def resolve(self, params: ParamSet, given: Any, where: str) -> dict[str, Any] | None:
        if not isinstance(given, dict):
            self.problem(where, f"expected a table of parameters, got {given!r}")
            return None
        try:
            return params.resolve(given)
        except ParamError as err:
            self.problems.append(f"{where}.{err}")
            return None

    def plugin_class(self, kind: Kind, name: Any, where: str) -> type | None:
        if not isinstance(name, str):
            self.problem(where, f"expected the name of a {kind} plugin, got {name!r}")
            return None
        try:
            return self.host.get(kind, name).obj
        except UnknownPluginError as err:
            self.problem(where, str(err))
            return None

    def variants(self, cls: type, given: Any, where: str) -> list[dict[str, Any]]:
        """Every combination of the swept parameter values, each validated and completed."""
        if not isinstance(given, dict):
            self.problem(where, f"expected a table of parameters, got {given!r}")
            return []
        declared = params_of(cls)
        axes: list[list[tuple[str, Any]]] = []
        for key, value in given.items():
            param = declared.get(key)
            swept = param.is_sweep(value) if param is not None else False
            axes.append([(key, v) for v in value] if swept else [(key, value)])
        out: list[dict[str, Any]] = []
        for combo in itertools.product(*axes) if axes else [()]:
            given_combo = dict(combo)
            try:
                resolved = declared.resolve(given_combo)
                if _constructible(cls):
                    cls(**resolved)
            except ParamError as err:
                self.problems.append(f"{where}.{err}")
                return []
            except ValueError as err:
                self.problem(where, str(err))
                return []
            # Cells keep the values the suite gave (validated); defaults are filled in when the
            # cell runs, so a cell's id does not change when a plugin adds a parameter.
            out.append({k: resolved[k] for k in given_combo})
        return out

    def entries(self, data: dict[str, Any], key: str, kind: Kind) -> list[dict[str, Any]]:
        raw = data.get(key)
        if not isinstance(raw, list) or not raw:
            self.problem(key, f"expected at least one [[{key}]] entry with a name")
            return []
        out: list[dict[str, Any]] = []
        allowed = {"method": ("name", "params", "loss"), "model": ("name", "params", "neuron"),
                   "dataset": ("name", "params", "T")}[kind]
        for i, entry in enumerate(raw):
            where = f"{key}[{i}]"
            if not isinstance(entry, dict):
                self.problem(where, "expected a table")
                continue
            for k in entry:
                if k not in allowed:
                    self.problem(f"{where}.{k}", f"unknown key; allowed: {', '.join(allowed)}")
            cls = self.plugin_class(kind, entry.get("name"), f"{where}.name")
            if cls is None:
                continue
            if kind == "model":
                out.extend(self.model_entry(entry, cls, where))
                continue
            extra: dict[str, Any] = {}
            if kind == "method":
                loss = entry.get("loss")
                if loss is not None and loss not in LOSS_FORMS:
                    self.problem(f"{where}.loss", f"expected one of {', '.join(map(repr, LOSS_FORMS))}, got {loss!r}")
                extra["loss"] = loss
            if kind == "dataset":
                extra["T"] = self.int_list(entry["T"], f"{where}.T", low=1) if "T" in entry else None
            for params in self.variants(cls, entry.get("params", {}), f"{where}.params"):
                out.append({"name": entry["name"], "params": params, **extra})
        return out

    def model_entry(self, entry: dict[str, Any], cls: type, where: str) -> list[dict[str, Any]]:
        neuron_raw = entry.get("neuron", {"name": "lif"})
        if isinstance(neuron_raw, str):
            neuron_raw = {"name": neuron_raw}
        if not isinstance(neuron_raw, dict):
            self.problem(f"{where}.neuron", f"expected a table such as {{ name = 'lif' }}, got {neuron_raw!r}")
            return []
        for k in neuron_raw:
            if k not in ("name", "params", "surrogate"):
                self.problem(f"{where}.neuron.{k}", "unknown key; allowed: name, params, surrogate")
        neuron_cls = self.plugin_class("neuron", neuron_raw.get("name"), f"{where}.neuron.name")
        surrogate_raw = neuron_raw.get("surrogate", {"name": "atan"})
        if isinstance(surrogate_raw, str):
            surrogate_raw = {"name": surrogate_raw}
        if not isinstance(surrogate_raw, dict):
            self.problem(f"{where}.neuron.surrogate", f"expected a name or a table, got {surrogate_raw!r}")
            return []
        surrogate_cls = self.plugin_class("surrogate", surrogate_raw.get("name"), f"{where}.neuron.surrogate.name")
        if neuron_cls is None or surrogate_cls is None:
            return []
        models = self.variants(cls, entry.get("params", {}), f"{where}.params")
        neurons = self.variants(neuron_cls, neuron_raw.get("params", {}), f"{where}.neuron.params")
        surrogates = self.variants(surrogate_cls, surrogate_raw.get("params", {}), f"{where}.neuron.surrogate.params")
        return [
            {
                "name": entry["name"],
                "params": m,
                "neuron": {"name": neuron_raw["name"], "params": n},
                "surrogate": {"name": surrogate_raw["name"], "params": s},
            }
            for m, n, s in itertools.product(models, neurons, surrogates)
        ]

    def metrics(self, raw: Any) -> list[str]:
        if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
            self.problem("metrics", f"expected a list of metric plugin names, got {raw!r}")
            return []
        for i, name in enumerate(raw):
            self.plugin_class("metric", name, f"metrics[{i}]")
        return list(raw)


def _constructible(cls: type) -> bool:
    """Methods and datasets validate cross-parameter constraints in ``__init__`` (cheap)."""
    from snnarena.data import Dataset
    from snnarena.method import GradientMethod

    return issubclass(cls, (GradientMethod, Dataset))

