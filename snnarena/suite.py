"""Suite files: load a TOML suite, validate it against the loaded plugins, expand it into cells.

A suite is a grid: every method variant × model variant × dataset variant × ``T`` × seed is one
:class:`CellSpec`, trained under the suite's one ``[train]`` budget. A list value of a plugin
parameter is swept; a scalar is fixed (for list-valued parameters such as ``hidden``, a list of
lists is swept). Every error is found before any cell runs and names the file, the key and what
it accepts, e.g. ``suites/quick.toml: methods[1].params.K: expected an integer >= 1, got 'eight'``;
all problems are reported at once.

Validation works per variant, never per cell: repeated variants, an input batch ``[T, B, ...]``
larger than the machine's memory (:meth:`Dataset.input_size`) and missing or damaged data files
(:meth:`Dataset.check_files`) are found before anything runs. The cells themselves are made on
demand (:attr:`SuiteSpec.n_cells` counts them without expanding the grid).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snnarena.data import Dataset
from snnarena.errors import SnnarenaError
from snnarena.extras import import_extra
from snnarena.host import PluginHost
from snnarena.loss import LOSS_FORMS
from snnarena.method import Preset
from snnarena.params import Param, ParamError, ParamSet, params_of
from snnarena.registry import Kind, UnknownPluginError
from snnarena.task import task_of

if TYPE_CHECKING:
    from snnarena.executor import ExecutorChoice

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "adamax", "sgd")
#: ``train.optimizer.schedule``: how the learning rate moves over the budget (see OPTIMIZER_PARAMS).
SCHEDULES: dict[str, str] = {
    "constant": "the learning rate stays lr",
    "cosine": "cosine annealing from lr to 0 over the budget (torch.optim.lr_scheduler.CosineAnnealingLR)",
    "step": "lr times gamma every step_size units (torch.optim.lr_scheduler.StepLR)",
}
#: ``train.select``: which weights a cell's test score (and fidelity, metrics) is measured on.
SELECT_RULES: dict[str, str] = {
    "last": "the weights after the last epoch",
    "best_val": "the weights of the epoch with the best validation score (the highest accuracy, or the "
    "lowest MSE on regression tasks), the earliest on ties",
}
#: ``grid.protocol``: how each method's training setting is chosen (recorded in every row).
PROTOCOLS: dict[str, str] = {
    "harmonized": "every method trains the suite's one model, neuron, surrogate, loss and optimizer; a method "
    "entry runs a preset only where it names one (preset = '...')",
    "paper": "every method entry that names no preset runs its method's 'paper' preset (its paper's neuron, "
    "surrogate, loss and optimizer); a method without one runs with the suite's settings",
}
DEFAULT_PROTOCOL = "harmonized"
#: The preset a method entry runs under the ``paper`` protocol when it names none.
PAPER_PRESET = "paper"
#: CellSpec fields that are left out of :attr:`CellSpec.cell_id` while they hold these values, so
#: that the ids of suites written before the field existed do not change.
_ID_DEFAULTS: dict[str, Any] = {"protocol": DEFAULT_PROTOCOL, "preset": "", "tuned": {}}
#: The CellSpec fields a preset can replace for its method's cells (besides ``loss``).
_NEURON_FIELDS = ("neuron", "neuron_params", "surrogate", "surrogate_params")
#: The method-variant field carrying the model parameters a preset sets (merged into the cells'
#: ``model_params``; not a CellSpec field itself).
PRESET_MODEL_PARAMS = "preset_model_params"
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
        Param(
            "fidelity_points",
            "int",
            3,
            "epochs whose learning-curve point also measures fidelity (spread evenly from the first to the "
            "last epoch; 0: none); needs fidelity",
            low=0,
        ),
        Param("eval_every_epoch", "bool", True, "record validation accuracy after every epoch"),
        Param(
            "select",
            "str",
            "last",
            "weights the test score is read from: last (after the last epoch) or best_val "
            "(the epoch with the best validation score: accuracy, or MSE on regression tasks; needs eval_every_epoch)",
            choices=tuple(SELECT_RULES),
        ),
    )
)
#: ``train.optimizer.weight_decay_on``: every parameter, or only weights (two or more dimensions).
WEIGHT_DECAY_TARGETS: tuple[str, ...] = ("all", "weights")
OPTIMIZER_PARAMS = ParamSet(
    (
        Param("name", "str", "adam", "optimizer", choices=OPTIMIZERS),
        Param("lr", "float", 1e-3, "learning rate", low=0.0),
        Param("weight_decay", "float", 0.0, "L2 penalty", low=0.0),
        Param(
            "weight_decay_on",
            "str",
            "all",
            "parameters the L2 penalty applies to: all, or weights (tensors of two or more dimensions: linear and "
            "conv weights; biases, norm scales and neuron parameters exempt, as several papers' code does)",
            choices=WEIGHT_DECAY_TARGETS,
        ),
        Param("momentum", "float", 0.0, "momentum (sgd only)", low=0.0, high=1.0),
        Param(
            "schedule",
            "str",
            "constant",
            "learning-rate schedule: constant, cosine (torch CosineAnnealingLR to 0 over the budget) or step "
            "(StepLR: times gamma every step_size units); the unit is an epoch under train.epochs, a training "
            "step under train.steps",
            choices=tuple(SCHEDULES),
        ),
        Param("step_size", "int", None, "step schedule: units (epochs, or steps) between decays", low=1, nullable=True),
        Param("gamma", "float", 0.1, "step schedule: factor applied to the learning rate at every decay", low=0.0),
    )
)
#: The ``train.optimizer`` keys of the learning-rate schedule. While ``schedule`` is ``constant`` they
#: are left out of the resolved optimizer (:func:`optimizer_settings`), so the cell ids and
#: fingerprints of suites that set no schedule do not change.
SCHEDULE_KEYS = ("schedule", "step_size", "gamma")


def optimizer_settings(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer a cell records: ``resolved`` (OPTIMIZER_PARAMS with defaults filled in) without
    the schedule keys when the schedule is ``constant`` and without ``weight_decay_on`` when it is
    ``all``, so the ids of suites that set neither do not change."""
    out = dict(resolved)
    if out.get("schedule", "constant") == "constant":
        out = {k: v for k, v in out.items() if k not in SCHEDULE_KEYS}
    if out.get("weight_decay_on") == "all":
        del out["weight_decay_on"]
    return out


def schedule_problems(given: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, message)`` for schedule keys that do not fit the ``schedule`` given in ``given`` (the
    ``train.optimizer`` table as written): ``step`` needs ``step_size``; ``step_size`` and ``gamma``
    belong to ``step`` only."""
    schedule = given.get("schedule", "constant")
    if schedule not in SCHEDULES:
        return []  # reported by the parameter check
    problems = [
        (key, f"only the step schedule uses {key}, not {schedule!r}; remove it or set schedule = 'step'")
        for key in ("step_size", "gamma")
        if key in given and given[key] is not None and schedule != "step"
    ]
    if schedule == "step" and given.get("step_size") is None:
        problems.append(("step_size", "the step schedule needs step_size = N (epochs, or steps under train.steps)"))
    return problems


_TOP_KEYS = (
    "name",
    "description",
    "data_root",
    "executor",
    "train",
    "grid",
    "methods",
    "models",
    "datasets",
    "metrics",
    "tune",
)


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
    #: ``grid.protocol`` of the suite (see :data:`PROTOCOLS`).
    protocol: str = DEFAULT_PROTOCOL
    #: The method preset the cell runs (``"paper"`` ...), ``""`` for none.
    preset: str = ""
    #: What ``[tune]`` chose for the cell (``{"lr": ..., "trials": ..., "score": ..., "seed": ...}``),
    #: empty without tuning; the chosen values are already in ``optimizer``.
    tuned: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = list(self.metrics)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellSpec:
        return cls(**{**data, "metrics": tuple(data.get("metrics", ()))})

    @property
    def cell_id(self) -> str:
        """A stable id: the hash of everything that defines the cell (used by ``--resume``);
        ``protocol`` and ``preset`` count only when set, so older suites keep their ids."""
        fields = {k: v for k, v in self.to_dict().items() if k not in _ID_DEFAULTS or v != _ID_DEFAULTS[k]}
        canonical = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """Human-readable, e.g. ``tbptt[K=4] | mlp/lif | digits | T=16 | seed=0`` (``ottt@paper`` ... for a preset)."""

        def tag(name: str, params: Mapping[str, Any]) -> str:
            if not params:
                return name
            inner = ",".join(f"{k}={_short(v)}" for k, v in params.items())
            return f"{name}[{inner}]"

        return " | ".join(
            (
                tag(f"{self.method}@{self.preset}" if self.preset else self.method, self.method_params),
                f"{self.model}/{self.neuron}" if self.neuron else self.model,
                tag(self.dataset, self.dataset_params),
                f"T={self.T}",
                f"seed={self.seed}",
            )
        )

    @property
    def components(self) -> tuple[tuple[Kind, str], ...]:
        """Every ``(kind, name)`` plugin class the cell uses; a model without a neuron
        (``uses_neuron = False``) names no neuron and no surrogate."""
        named: tuple[tuple[Kind, str], ...] = (
            ("method", self.method),
            ("model", self.model),
            ("dataset", self.dataset),
            ("neuron", self.neuron),
            ("surrogate", self.surrogate),
            *(("metric", m) for m in self.metrics),
        )
        return tuple((kind, name) for kind, name in named if name)

    def field_value(self, key: str) -> str:
        """The value a selector key (``method``, ``dataset``, ``T`` ...) is matched against."""
        return str(getattr(self, key))


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class CellGrid:
    """The validated axes of a suite; its cells are their product, made on demand.

    Cells are ordered method variant, model variant, dataset variant, then ``T``, then seed. A
    method variant that runs a preset also carries the fields the preset replaces (``neuron``,
    ``neuron_params``, ``surrogate``, ``surrogate_params``, ``optimizer``): they win over the
    model's and the suite's, except that a model without a neuron keeps none.
    """

    suite: str
    methods: tuple[dict[str, Any], ...]  # CellSpec fields: method, method_params, loss, preset (+ replaced ones)
    models: tuple[dict[str, Any], ...]  # model, model_params, neuron, neuron_params, surrogate, surrogate_params
    datasets: tuple[tuple[dict[str, Any], tuple[int, ...]], ...]  # (dataset, dataset_params), its T values
    seeds: tuple[int, ...]
    train: dict[str, Any]  # without ``loss`` (a cell's loss is its own field)
    optimizer: dict[str, Any]
    metrics: tuple[str, ...]
    protocol: str = DEFAULT_PROTOCOL

    @property
    def n_cells(self) -> int:
        """The number of cells, from the axis sizes alone."""
        per_dataset = sum(len(Ts) for _, Ts in self.datasets) * len(self.seeds)
        return len(self.methods) * len(self.models) * per_dataset

    def __iter__(self) -> Iterator[CellSpec]:
        for method, model, (dataset, Ts) in itertools.product(self.methods, self.models, self.datasets):
            for T, seed in itertools.product(Ts, self.seeds):
                yield CellSpec(
                    suite=self.suite,
                    **self._setting(method, model),
                    **dataset,
                    T=T,
                    seed=seed,
                    train=self.train,
                    metrics=self.metrics,
                    protocol=self.protocol,
                )

    def _setting(self, method: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
        """The method, model, neuron, surrogate and optimizer fields of a (method, model) pair: a
        preset's replacements win, but a model that builds no neuron (empty ``neuron``) keeps none."""
        fields = {**model, "optimizer": self.optimizer, **method}
        if not model["neuron"]:
            fields.update({k: model[k] for k in _NEURON_FIELDS})
        preset_model = fields.pop(PRESET_MODEL_PARAMS, None)
        if preset_model:
            fields["model_params"] = {**model["model_params"], **preset_model}
        return fields


@dataclass(frozen=True)
class TuneSpec:
    """A validated ``[tune]`` table (:mod:`snnarena.tuning`): trials per tuning unit, the
    learning-rate range (log-uniform) and the seed the trials train with."""

    trials: int
    lr: tuple[float, float]
    seed: int


class SuiteSpec:
    """A validated suite: its cells plus the original text (copied into the run directory).

    Built either from a list of ``cells`` or from a :class:`CellGrid`; with a grid, ``n_cells``
    is known without making any cell and ``cells`` is made on first access (``iter_cells`` streams
    them), so a huge grid can be counted and refused before it is expanded.
    """

    def __init__(
        self,
        name: str,
        description: str,
        source: str,
        text: str,
        cells: Sequence[CellSpec] | None = None,
        *,
        grid: CellGrid | None = None,
    ) -> None:
        if cells is not None and grid is not None:
            raise TypeError("SuiteSpec takes cells or a grid, not both")
        self.name = name
        self.description = description
        self.source = source
        self.text = text
        self.grid = grid
        self._cells = list(cells) if cells is not None else None
        #: What validation added to the suite as given (one line each), e.g. BPTT reference rows.
        self.added: tuple[str, ...] = ()
        #: The suite's ``[tune]`` table, validated, or ``None`` (see :mod:`snnarena.tuning`).
        self.tune: TuneSpec | None = None
        #: The suite's ``[executor]`` table (options validated), or ``None``: run settings, outside
        #: the run's fingerprint (see :mod:`snnarena.executor`).
        self.executor: ExecutorChoice | None = None
        #: Where the cells read their data files (``data_root``, or the caller's override), or ``None``.
        self.data_root: str | None = None

    @property
    def n_cells(self) -> int:
        """How many cells the suite has (without expanding a grid)."""
        if self._cells is not None:
            return len(self._cells)
        return self.grid.n_cells if self.grid is not None else 0

    def iter_cells(self) -> Iterator[CellSpec]:
        """The cells one by one, in order, without keeping them."""
        if self._cells is not None:
            return iter(self._cells)
        return iter(self.grid) if self.grid is not None else iter(())

    @property
    def cells(self) -> list[CellSpec]:
        """Every cell, in order (made on first access and kept)."""
        if self._cells is None:
            self._cells = list(self.iter_cells())
        return self._cells

    def __repr__(self) -> str:
        return f"SuiteSpec(name={self.name!r}, source={self.source!r}, n_cells={self.n_cells})"


# -- locating and reading -------------------------------------------------------------------
def shipped_suites() -> dict[str, str]:
    """Suites shipped inside the package: name → TOML text."""
    folder = resources.files("snnarena_suites")
    return {
        p.name[: -len(".toml")]: p.read_text(encoding="utf-8") for p in folder.iterdir() if p.name.endswith(".toml")
    }


def read_suite_text(suite: str) -> tuple[str, str]:
    """``(source, text)`` for a suite given as a path or as the name of a shipped suite."""
    path = Path(suite)
    if path.is_file():
        return str(path), _read_utf8(path)
    shipped = shipped_suites()
    if suite in shipped:
        return f"{suite} (shipped suite)", shipped[suite]
    if path.is_dir():
        raise SuiteError(suite, ["is a directory (give a .toml file or a shipped suite name)"])
    available = ", ".join(sorted(shipped)) or "(none)"
    raise SuiteError(suite, [f"no such file, and no shipped suite of that name; shipped suites: {available}"])


def _read_utf8(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SuiteError(str(path), [f"cannot be read: {err.strerror or err}"]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SuiteError(
            str(path),
            [
                f"not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} cannot be decoded; "
                "save the file as UTF-8"
            ],
        ) from None


def load_suite(suite: str, host: PluginHost, data_root: str | None = None) -> SuiteSpec:
    """Read, validate and expand ``suite`` (a path or a shipped suite name); ``data_root`` (e.g.
    ``--data-root``) wins over the suite's own ``data_root`` key."""
    source, text = read_suite_text(suite)
    return parse_suite(text, host, source, data_root=data_root)


def parse_suite(text: str, host: PluginHost, source: str = "<suite>", *, data_root: str | None = None) -> SuiteSpec:
    """Validate TOML ``text`` against ``host``'s plugins; the cells are made on demand. Dataset
    files are checked under ``data_root`` when given, else the suite's ``data_root`` key, else
    ``$SNNARENA_DATA`` (:func:`snnarena.data.data_root`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(source, [f"not valid TOML: {err}"]) from None
    return _Validator(host, source).run(data, text, data_root)


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine (``None`` where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def input_batch_problem(
    T: int, train: Mapping[str, Any], features: int, what: str, nodes: int | None = None
) -> str | None:
    """Why an input batch ``[T, B, features]`` (float32, ``B`` the larger of the training and the
    evaluation batch size, or the ``nodes`` of a graph, whose batch is the whole graph) of ``what``
    cannot fit in this machine's memory, or ``None``."""
    memory = machine_memory_bytes()
    batch = nodes if nodes is not None else max(train["batch_size"], train["eval_batch_size"])
    need = T * batch * features * 4
    if memory is None or need <= memory:
        return None
    fix = "lower T or use a smaller graph" if nodes is not None else "lower T, batch_size or eval_batch_size"
    unit = f"{batch} nodes" if nodes is not None else f"batch {batch}"
    return (
        f"T={T} needs about {_bytes(need)} for one input batch of {what} (T x {unit} x {features} "
        f"inputs x 4 bytes), more than this machine's memory ({_bytes(memory)}); {fix}"
    )


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


# -- validation -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Variant:
    """One validated variant of a ``[[methods]]``/``[[models]]``/``[[datasets]]`` entry."""

    where: str  # the entry, e.g. ``methods[1]``
    fields: dict[str, Any]  # the CellSpec fields it sets (parameters as the suite gave them)
    identity: str  # the variant with every default filled in: equal identity, same experiment
    label: str  # e.g. ``tbptt K=4``
    cls: type | None = None
    resolved: dict[str, Any] = field(default_factory=dict)
    Ts: tuple[int, ...] | None = None  # a dataset entry's own T values


def _label(name: str, params: Mapping[str, Any]) -> str:
    return " ".join([name, *(f"{k}={_short(v)}" for k, v in params.items())])


def _identity(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


class _Validator:
    def __init__(self, host: PluginHost, source: str) -> None:
        self.host = host
        self.source = source
        self.problems: list[str] = []
        self.protocol = DEFAULT_PROTOCOL
        #: Lines for :attr:`SuiteSpec.added` (a method the ``paper`` protocol leaves as given ...).
        self.notes: list[str] = []

    def problem(self, where: str, message: str) -> None:
        line = f"{where}: {message}"
        if line not in self.problems:
            self.problems.append(line)

    def param_problems(self, where: str, err: ParamError) -> None:
        for key, message in err.problems:
            self.problem(f"{where}.{key}" if key else where, message)

    def run(self, data: dict[str, Any], text: str, data_root: str | None = None) -> SuiteSpec:
        from snnarena.executor import data_root_env

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
        seeds, Ts, self.protocol = self.grid(data.get("grid"))
        tune = self.tune(data["tune"], seeds) if "tune" in data else None
        executor = self.executor(data["executor"]) if "executor" in data else None
        root = data_root if data_root is not None else self.data_root(data.get("data_root"))
        methods = self.entries(data, "methods", "method", train["loss"])
        methods, added = reference_rows(methods)
        added = [*self.notes, *added]
        models = self.entries(data, "models", "model", train["loss"])
        datasets = self.entries(data, "datasets", "dataset", train["loss"])
        metrics = self.metrics(data.get("metrics", []))
        for variants in (methods, models):
            self.repeated_variants(variants)
        self.preset_model_checks(methods, models)
        self.repeated_datasets(datasets, Ts)
        for dataset in datasets:
            with data_root_env(root):
                self.dataset_checks(dataset, dataset.Ts or Ts, train)
            task = self.task_checks(dataset, methods, train["loss"])
            if task is not None:
                self.combination_checks(dataset, task, methods, models, metrics)
            for T in dataset.Ts or Ts:
                self.length_checks(T, dataset, methods + models)
        if self.problems:
            raise SuiteError(self.source, self.problems)
        grid = CellGrid(
            suite=name,
            methods=tuple(m.fields for m in methods),
            models=tuple(m.fields for m in models),
            datasets=tuple((d.fields, tuple(d.Ts or Ts)) for d in datasets),
            seeds=tuple(seeds),
            train={k: v for k, v in train.items() if k != "loss"},
            optimizer=optimizer,
            metrics=tuple(metrics),
            protocol=self.protocol,
        )
        spec = SuiteSpec(name=name, description=description, source=self.source, text=text, grid=grid)
        spec.added = tuple(added)
        spec.tune = tune
        spec.executor = executor
        spec.data_root = root
        return spec

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
        if train["select"] == "best_val" and not train["eval_every_epoch"]:
            self.problem(
                "train.select",
                "'best_val' picks the epoch with the best validation score, which needs per-epoch "
                "validation; set eval_every_epoch = true or select = 'last'",
            )
        if isinstance(optimizer_raw, str):
            optimizer_raw = {"name": optimizer_raw}
        if not isinstance(optimizer_raw, dict):
            self.problem(
                "train.optimizer", f"expected a table such as {{ name = 'adam', lr = 1e-3 }}, got {optimizer_raw!r}"
            )
            optimizer_raw = {}
        optimizer = optimizer_settings(self.resolve(OPTIMIZER_PARAMS, optimizer_raw, "train.optimizer") or {})
        for key, message in schedule_problems(optimizer_raw):
            self.problem(f"train.optimizer.{key}", message)
        chosen = optimizer_raw.get("name", OPTIMIZER_PARAMS.declared[0].default)
        if "momentum" in optimizer_raw and chosen != "sgd":
            self.problem(
                "train.optimizer.momentum",
                f"only the sgd optimizer uses momentum, not {chosen!r}; remove it or set name = 'sgd'",
            )
        return train, optimizer

    def tune(self, raw: Any, seeds: list[int]) -> TuneSpec | None:
        """The ``[tune]`` table: ``trials`` (>= 1), ``lr = [low, high]`` (0 < low < high), ``seed``."""
        if not isinstance(raw, dict):
            self.problem("tune", f"expected a table such as {{ trials = 8, lr = [1e-4, 1e-1] }}, got {raw!r}")
            return None
        for key in raw:
            if key not in ("trials", "lr", "seed"):
                self.problem(f"tune.{key}", "unknown key; allowed: trials, lr, seed")
        trials, lr, seed = raw.get("trials"), raw.get("lr"), raw.get("seed", seeds[0] if seeds else 0)
        ok = True
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            self.problem("tune.trials", f"expected the number of trials per method, an integer >= 1, got {trials!r}")
            ok = False
        given = lr if isinstance(lr, list) else []
        bounds = [float(v) for v in given if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(bounds) != 2 or len(given) != 2 or not 0 < bounds[0] < bounds[1]:
            self.problem("tune.lr", f"expected the learning-rate range [low, high] with 0 < low < high, got {lr!r}")
            ok = False
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            self.problem("tune.seed", f"expected an integer >= 0, got {seed!r}")
            ok = False
        try:
            import_extra("optuna", extra="tune", needed_for="[tune]")
        except SnnarenaError as err:
            self.problem("tune", str(err))
            ok = False
        if not ok or not isinstance(trials, int) or not isinstance(seed, int):
            return None
        return TuneSpec(trials, (bounds[0], bounds[1]), seed)

    def executor(self, raw: Any) -> ExecutorChoice | None:
        """The ``[executor]`` table: ``name`` (a registered executor) plus its options, checked
        against the executor's ``PARAMS`` (and its packages: a missing extra is named)."""
        from snnarena.executor import ExecutorChoice, executor_class

        if not isinstance(raw, dict):
            self.problem("executor", f"expected a table such as {{ name = 'ray', cpus_per_cell = 2 }}, got {raw!r}")
            return None
        options = {k: v for k, v in raw.items() if k != "name"}
        name = raw.get("name")
        if not isinstance(name, str):
            self.problem("executor.name", f"expected the name of an executor, got {name!r}")
            return None
        try:
            cls = executor_class(self.host, name)
        except UnknownPluginError as err:
            self.problem("executor.name", str(err))
            return None
        resolved = self.resolve(params_of(cls), options, "executor")
        if resolved is None:
            return None
        try:
            cls.check_environment(resolved)
        except SnnarenaError as err:
            self.problem("executor", str(err))
            return None
        return ExecutorChoice(name, options, f"{self.source}: executor.")

    def data_root(self, raw: Any) -> str | None:
        """The ``data_root`` key: a folder path (``~`` expanded; relative to the working directory)."""
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw:
            self.problem("data_root", f"expected the path of the folder holding the datasets' files, got {raw!r}")
            return None
        return str(Path(raw).expanduser())

    def grid(self, raw: Any) -> tuple[list[int], list[int], str]:
        if not isinstance(raw, dict):
            self.problem("grid", "missing table [grid] with T = [...] (and optionally seeds = [...])")
            return [0], [1], DEFAULT_PROTOCOL
        for key in raw:
            if key not in ("seeds", "T", "protocol"):
                self.problem(f"grid.{key}", "unknown key; allowed: seeds, T, protocol")
        protocol = raw.get("protocol", DEFAULT_PROTOCOL)
        if protocol not in PROTOCOLS:
            self.problem("grid.protocol", f"expected one of {', '.join(map(repr, PROTOCOLS))}, got {protocol!r}")
            protocol = DEFAULT_PROTOCOL
        seeds = self.int_list(raw.get("seeds", [0]), "grid.seeds", low=0)
        if "T" not in raw:
            self.problem("grid.T", "missing; give the numbers of time steps, e.g. T = [16]")
        Ts = self.int_list(raw.get("T", [1]), "grid.T", low=1)
        return seeds, Ts, protocol

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
            self.param_problems(where, err)
            return None

    def plugin_class(self, kind: Kind, name: Any, where: str) -> type | None:
        if not isinstance(name, str):
            self.problem(where, f"expected the name of a {kind} plugin, got {name!r}")
            return None
        try:
            cls = self.host.get(kind, name).obj
        except UnknownPluginError as err:
            self.problem(where, str(err))
            return None
        check = getattr(cls, "check_environment", None)
        reason = check() if check is not None else None
        if reason:
            self.problem(where, f"{kind} {name!r} cannot run here: {reason}")
        return cls

    def variants(self, cls: type, given: Any, where: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Every combination of the swept parameter values, validated: ``(as given, resolved)``.

        Cells keep the values the suite gave (validated); defaults are filled in when the cell
        runs, so a cell's id does not change when a plugin adds a parameter.
        """
        if not isinstance(given, dict):
            self.problem(where, f"expected a table of parameters, got {given!r}")
            return []
        declared = params_of(cls)
        axes: list[list[tuple[str, Any]]] = []
        for key, value in given.items():
            param = declared.get(key)
            swept = param.is_sweep(value) if param is not None else False
            if swept and not value:
                self.problem(
                    f"{where}.{key}",
                    "an empty list sweeps no value, so the grid has no cell; give one value or a list of them",
                )
                return []
            axes.append([(key, v) for v in value] if swept else [(key, value)])
        out: list[tuple[dict[str, Any], dict[str, Any]]] = []
        failed = False
        for combo in itertools.product(*axes) if axes else [()]:
            given_combo = dict(combo)
            try:
                resolved = declared.resolve(given_combo)
                if _constructible(cls):
                    cls(**given_combo)
            except ParamError as err:
                self.param_problems(where, err)
                failed = True
                continue
            except ValueError as err:
                self.problem(where, str(err))
                failed = True
                continue
            out.append(({k: resolved[k] for k in given_combo}, resolved))
        return [] if failed else out

    def entries(self, data: dict[str, Any], key: str, kind: Kind, train_loss: str) -> list[_Variant]:
        raw = data.get(key)
        if not isinstance(raw, list) or not raw:
            self.problem(key, f"expected at least one [[{key}]] entry with a name")
            return []
        out: list[_Variant] = []
        allowed = {
            "method": ("name", "params", "loss", "preset"),
            "model": ("name", "params", "neuron"),
            "dataset": ("name", "params", "T"),
        }[kind]
        for i, entry in enumerate(raw):
            where = f"{key}[{i}]"
            if not isinstance(entry, dict):
                self.problem(where, "expected a table")
                continue
            for k in entry:
                if k not in allowed:
                    self.problem(f"{where}.{k}", f"unknown key; allowed: {', '.join(allowed)}")
            if kind == "method" and isinstance(entry.get("name"), str) and "@" in entry["name"]:
                method, _, preset = entry["name"].partition("@")
                self.problem(
                    f"{where}.name",
                    f"{entry['name']!r}: name the method and its preset apart: "
                    f"name = {method!r} and preset = {preset!r}",
                )
                continue
            cls = self.plugin_class(kind, entry.get("name"), f"{where}.name")
            if cls is None:
                continue
            if kind == "model":
                out.extend(self.model_entry(entry, cls, where))
            elif kind == "method":
                out.extend(self.method_entry(entry, cls, where, train_loss))
            else:
                out.extend(self.dataset_entry(entry, cls, where))
        return out

    def method_entry(self, entry: dict[str, Any], cls: type, where: str, train_loss: str) -> list[_Variant]:
        """The variants of a ``[[methods]]`` entry. A preset (named, or ``paper`` under the paper
        protocol) gives the defaults of ``params`` (the entry's values win), the loss (the entry's
        ``loss`` wins over it, it over ``train.loss``) and the neuron, surrogate and optimizer."""
        loss = entry.get("loss")
        if loss is not None and loss not in LOSS_FORMS:
            self.problem(f"{where}.loss", f"expected one of {', '.join(map(repr, LOSS_FORMS))}, got {loss!r}")
        preset_name, preset = self.preset_of(entry, cls, where)
        replaced = self.preset_setting(preset, f"{where}.preset ({entry['name']}@{preset_name})") if preset else {}
        loss = loss or (preset.loss if preset is not None and preset.loss else None) or train_loss
        params = entry.get("params", {})
        if preset is not None and isinstance(params, dict):
            params = {**preset.params, **params}
        name = f"{entry['name']}@{preset_name}" if preset_name else entry["name"]
        return [
            _Variant(
                where,
                {"method": entry["name"], "method_params": given, "loss": loss, "preset": preset_name, **replaced},
                _identity(entry["name"], resolved, loss, replaced),
                _label(name, given),
                cls,
                resolved,
            )
            for given, resolved in self.variants(cls, params, f"{where}.params")
        ]

    def preset_of(self, entry: dict[str, Any], cls: type, where: str) -> tuple[str, Preset | None]:
        """The preset an entry runs, ``("", None)`` for none: its ``preset`` key, or under the paper
        protocol the method's ``paper`` preset where it has one (noted where it has none)."""
        presets: Mapping[str, Preset] = getattr(cls, "PRESETS", {})
        name = entry.get("preset")
        if name is None:
            if self.protocol != "paper":
                return "", None
            if PAPER_PRESET in presets:
                return PAPER_PRESET, presets[PAPER_PRESET]
            self.notes.append(
                f"protocol 'paper': method {entry['name']!r} ({where}) has no 'paper' preset and runs with the "
                "suite's neuron, surrogate, loss and optimizer"
            )
            return "", None
        if isinstance(name, str) and name in presets:
            return name, presets[name]
        available = ", ".join(map(repr, sorted(presets))) or "none"
        self.problem(
            f"{where}.preset",
            f"method {entry['name']!r} has no preset {name!r}; its presets: {available} (snnarena list -v shows them)",
        )
        return "", None

    def preset_setting(self, preset: Preset, where: str) -> dict[str, Any]:
        """The CellSpec fields ``preset`` replaces: ``neuron``/``neuron_params``,
        ``surrogate``/``surrogate_params``, ``optimizer`` (each only where the preset sets it).
        A preset that does not validate is the plugin's fault, and says so."""
        fields: dict[str, Any] = {}
        parts: tuple[tuple[Kind, Mapping[str, Any] | None], ...] = (
            ("neuron", preset.neuron),
            ("surrogate", preset.surrogate),
        )
        for kind, spec in parts:
            if spec is None:
                continue
            cls = self.plugin_class(kind, spec.get("name"), f"{where}.{kind}.name")
            variants = [] if cls is None else self.variants(cls, dict(spec.get("params", {})), f"{where}.{kind}.params")
            if len(variants) == 1:
                fields.update({kind: spec["name"], f"{kind}_params": variants[0][0]})
            elif len(variants) > 1:
                self.problem(f"{where}.{kind}.params", "a preset gives one value per parameter, not a sweep")
        if preset.loss is not None and preset.loss not in LOSS_FORMS:
            self.problem(f"{where}.loss", f"expected one of {', '.join(map(repr, LOSS_FORMS))}, got {preset.loss!r}")
        if preset.optimizer is not None:
            optimizer = self.resolve(OPTIMIZER_PARAMS, dict(preset.optimizer), f"{where}.optimizer")
            for key, message in schedule_problems(preset.optimizer):
                self.problem(f"{where}.optimizer.{key}", message)
            if optimizer is not None:
                fields["optimizer"] = optimizer_settings(optimizer)
        if preset.model:
            fields[PRESET_MODEL_PARAMS] = dict(preset.model)
        return fields

    def preset_model_checks(self, methods: list[_Variant], models: list[_Variant]) -> None:
        """Refuse a model that lacks a parameter a method's preset sets (naming both)."""
        for method in methods:
            wanted = method.fields.get(PRESET_MODEL_PARAMS) or {}
            for model in models:
                declared = params_of(model.cls) if model.cls is not None else None
                missing = [k for k in wanted if declared is None or declared.get(k) is None]
                if missing:
                    self.problem(
                        f"{method.where} × {model.where}",
                        f"the preset of {method.label!r} sets model parameters {missing}, which model "
                        f"{model.label!r} does not have; run that preset on a model that has them",
                    )

    def dataset_entry(self, entry: dict[str, Any], cls: type, where: str) -> list[_Variant]:
        Ts = tuple(self.int_list(entry["T"], f"{where}.T", low=1)) if "T" in entry else None
        return [
            _Variant(
                where,
                {"dataset": entry["name"], "dataset_params": given},
                _identity(entry["name"], resolved),
                _label(entry["name"], given),
                cls,
                resolved,
                Ts,
            )
            for given, resolved in self.variants(cls, entry.get("params", {}), f"{where}.params")
        ]

    def model_entry(self, entry: dict[str, Any], cls: type, where: str) -> list[_Variant]:
        if not getattr(cls, "uses_neuron", True):
            return self.neuron_free_model_entry(entry, cls, where)
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
        names = (entry["name"], neuron_raw["name"], surrogate_raw["name"])
        return [
            _Variant(
                where,
                {
                    "model": names[0],
                    "model_params": m,
                    "neuron": names[1],
                    "neuron_params": n,
                    "surrogate": names[2],
                    "surrogate_params": s,
                },
                _identity(names[0], m_all, names[1], n_all, names[2], s_all),
                " / ".join((_label(names[0], m), _label(names[1], n), _label(names[2], s))),
                cls,
                m_all,
            )
            for (m, m_all), (n, n_all), (s, s_all) in itertools.product(models, neurons, surrogates)
        ]

    def neuron_free_model_entry(self, entry: dict[str, Any], cls: type, where: str) -> list[_Variant]:
        """A model that builds no neuron (``uses_neuron = False``, e.g. ``lstm``): its cells have
        no neuron and no surrogate (empty names), and a ``neuron`` table is an error."""
        if "neuron" in entry:
            self.problem(
                f"{where}.neuron",
                f"model {entry['name']!r} builds no neuron (it is not a spiking model); remove the neuron table",
            )
            return []
        return [
            _Variant(
                where,
                {
                    "model": entry["name"],
                    "model_params": m,
                    "neuron": "",
                    "neuron_params": {},
                    "surrogate": "",
                    "surrogate_params": {},
                },
                _identity(entry["name"], m_all, "", {}, "", {}),
                _label(entry["name"], m),
                cls,
                m_all,
            )
            for m, m_all in self.variants(cls, entry.get("params", {}), f"{where}.params")
        ]

    def metrics(self, raw: Any) -> list[str]:
        if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
            self.problem("metrics", f"expected a list of metric plugin names, got {raw!r}")
            return []
        for i, name in enumerate(raw):
            self.plugin_class("metric", name, f"metrics[{i}]")
        return list(raw)

    # -- checks across variants (cheap: one per variant, never per cell) ---------------------
    def repeated_variants(self, variants: list[_Variant]) -> None:
        """Two variants with the same identity would run every one of their cells twice."""
        groups: dict[str, list[_Variant]] = {}
        for v in variants:
            groups.setdefault(v.identity, []).append(v)
        for group in groups.values():
            if len(group) > 1:
                self.problem(group[0].where.split("[")[0], f"{_who(group)} ({group[0].label}); remove the repeat")

    def repeated_datasets(self, variants: list[_Variant], grid_Ts: list[int]) -> None:
        """The same dataset variant twice runs the same cells twice for every ``T`` both have."""
        for i, a in enumerate(variants):
            for b in variants[i + 1 :]:
                shared = sorted(set(a.Ts or grid_Ts) & set(b.Ts or grid_Ts))
                if a.identity == b.identity and shared:
                    self.problem(
                        "datasets",
                        f"{_who([a, b])} ({a.label}) and both run T={', '.join(map(str, shared))}; "
                        "remove the repeat or give each entry its own T",
                    )

    def dataset_checks(self, dataset: _Variant, Ts: list[int] | tuple[int, ...], train: dict[str, Any]) -> None:
        """Refuse an input batch larger than this machine's memory, and missing/damaged data files."""
        assert dataset.cls is not None and issubclass(dataset.cls, Dataset)
        features = dataset.cls.input_size(dataset.resolved)
        too_large = None if features is None else input_batch_problem(max(Ts), train, features, dataset.label)
        if too_large:
            self.problem(f"{dataset.where}.T" if dataset.Ts else "grid.T", too_large)
        for T in Ts:
            reason = dataset.cls.check_T(dataset.resolved, T)
            if reason:
                self.problem(f"{dataset.where}.T" if dataset.Ts else "grid.T", reason)
        for message in dataset.cls.check_files(dataset.resolved):
            self.problem(dataset.where, message)

    def task_checks(self, dataset: _Variant, methods: list[_Variant], train_loss: str) -> str | None:
        """The dataset's task (``Dataset.task_for``); refuse a loss form it does not support
        (per-step tasks: ``per_step`` only), naming the dataset and the key that sets the loss."""
        assert dataset.cls is not None and issubclass(dataset.cls, Dataset)
        kind = dataset.cls.task_for(dataset.resolved)
        try:
            task = task_of(kind)
        except ValueError as err:
            self.problem(dataset.where, f"dataset {dataset.label!r} declares its task: {err}")
            return None
        seen: set[str] = set()
        for method in methods:
            loss = method.fields["loss"]
            where = "train.loss" if loss == train_loss else f"{method.where}.loss"
            if loss in task.loss_forms or where in seen:
                continue
            seen.add(where)
            self.problem(
                where,
                f"loss {loss!r} does not fit dataset {dataset.label!r} ({dataset.where}), a {kind} task, "
                f"which supports {', '.join(map(repr, sorted(task.loss_forms)))}; use one of those",
            )
        return kind

    def combination_checks(
        self, dataset: _Variant, task: str, methods: list[_Variant], models: list[_Variant], metrics: list[str]
    ) -> None:
        """Refuse a model, method or metric that cannot take the dataset's task (a graph model with
        sequence data, a static-input model with temporal data, an accuracy-only metric with a
        regression task), naming both plugins: every cell pairing them would be wasted."""
        fix = "a suite pairs every model, method and metric with every dataset; split it into suites"
        for what, variants in (("model", models), ("method", methods)):
            for variant in variants:
                takes = getattr(variant.cls, "tasks", None)
                if takes is not None and task not in takes:
                    self.problem(
                        f"{variant.where} × {dataset.where}",
                        f"{what} {variant.label!r} takes {_tasks(takes)} data, but dataset {dataset.label!r} "
                        f"is a {task} task; {fix}",
                    )
        for i, name in enumerate(metrics):
            try:
                takes = getattr(self.host.get("metric", name).obj, "tasks", None)
            except UnknownPluginError:
                continue  # reported by metrics()
            if takes is not None and task not in takes:
                self.problem(
                    f"metrics[{i}] × {dataset.where}",
                    f"metric {name!r} measures {_tasks(takes)} tasks, but dataset {dataset.label!r} is a "
                    f"{task} task; {fix}",
                )

    def length_checks(self, T: int, dataset: _Variant, variants: list[_Variant]) -> None:
        """Refuse a method or model variant that cannot run ``T`` steps (``check_T``), naming it."""
        for variant in variants:
            check = getattr(variant.cls, "check_T", None)
            reason = check(variant.resolved, T) if check is not None else None
            if reason:
                self.problem(f"{variant.where}.params", f"{variant.label!r} cannot run T={T}: {reason}")


def _tasks(kinds: Iterable[str]) -> str:
    return " or ".join(sorted(kinds))


#: The method every other is compared with (gradient fidelity, the report's ratios and tests).
REFERENCE_METHOD = "bptt"


def reference_rows(methods: list[_Variant]) -> tuple[list[_Variant], list[str]]:
    """``methods`` plus, when the suite has a BPTT entry, a BPTT variant (default parameters) for
    every training setting some method trains with and no BPTT entry does. A setting is the loss
    form and what a preset replaces (neuron, surrogate, optimizer): a method is compared with BPTT
    of its own objective and regime, so a suite that mixes losses or runs presets gets the matching
    reference rows. Returns the methods and one line per added variant."""
    references = [m for m in methods if m.fields["method"] == REFERENCE_METHOD]
    if not references:
        return methods, []
    template = references[0]
    covered = {_setting_key(m) for m in references}
    out, added = list(methods), []
    for method in methods:
        key = _setting_key(method)
        if key in covered:
            continue
        covered.add(key)
        replaced = _replaced(method)
        loss = method.fields["loss"]
        fields = {"method": REFERENCE_METHOD, "method_params": {}, "loss": loss, "preset": "", **replaced}
        resolved = params_of(template.cls).resolve({}) if template.cls is not None else {}
        out.append(
            _Variant(
                f"{method.where} (reference)",
                fields,
                _identity(REFERENCE_METHOD, resolved, loss, replaced),
                REFERENCE_METHOD,
                template.cls,
                resolved,
            )
        )
        added.append(
            f"added {REFERENCE_METHOD} with {_setting_text(method)}: the reference of {method.label!r} "
            f"({method.where}), which trains with that {'setting' if replaced else 'loss'}"
        )
    return out, added


def _replaced(method: _Variant) -> dict[str, Any]:
    """The fields a method variant's preset replaces (empty without a preset)."""
    return {k: v for k, v in method.fields.items() if k in (*_NEURON_FIELDS, "optimizer", PRESET_MODEL_PARAMS)}


def _setting_key(method: _Variant) -> str:
    return _identity(method.fields["loss"], _replaced(method))


def _setting_text(method: _Variant) -> str:
    """E.g. ``loss 'rate'`` or ``loss 'rate', neuron lif tau=1.1, surrogate triangle, optimizer sgd lr=0.1``."""
    fields = method.fields
    parts = [f"loss {fields['loss']!r}"]
    for kind in ("neuron", "surrogate"):
        if kind in fields:
            parts.append(f"{kind} {_label(fields[kind], fields[f'{kind}_params'])}")
    if "optimizer" in fields:
        optimizer = fields["optimizer"]
        parts.append(f"optimizer {_label(optimizer['name'], {k: v for k, v in optimizer.items() if k != 'name'})}")
    if fields.get(PRESET_MODEL_PARAMS):
        parts.append(f"model {_label('', fields[PRESET_MODEL_PARAMS]).strip()}")
    return ", ".join(parts)


def _who(group: list[_Variant]) -> str:
    wheres = list(dict.fromkeys(v.where for v in group))
    if len(wheres) == 1:
        return f"{wheres[0]} gives the same variant {len(group)} times"
    return f"{' and '.join(wheres)} are the same variant"


def _constructible(cls: type) -> bool:
    """Methods and datasets validate cross-parameter constraints in ``__init__`` (cheap)."""
    from snnarena.method import GradientMethod

    return issubclass(cls, (GradientMethod, Dataset))
