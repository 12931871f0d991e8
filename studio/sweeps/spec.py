"""The sweep document, format `studio.sweep/1`: parsing with errors that name the field, and what a
trial's parameters turn into (a graph and a TrainConfig).

A sweep searches over training settings (any TrainConfig field: `lr`, `batch_size`, `optimizer`, ...)
and graph parameters named `NODE_ID.PARAM` (`fc1.out_features`, `drop.p`). This module only reads
and checks documents (`load_sweep` raises SweepError listing every problem, by field);
`studio.sweeps.runner` runs them.

    >>> spec = load_sweep("sweep.json")  # doctest: +SKIP
    >>> graph, config = trial_inputs(spec, {"lr": 0.01, "fc1.out_features": 128})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from studio.errors import DataError, GraphError, TrainError
from studio.graph import Graph, load_graph, parse_graph, value_problem
from studio.runs import backends as registry
from studio.training.config import MAXIMIZED_METRICS, ConfigError, TrainConfig

SWEEP_FORMAT = "studio.sweep/1"
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median", "halving")
BACKENDS = tuple(registry.BACKENDS)  # where trials train (studio.runs.backends)
# A backend with settings takes them in an object of its name ("ray": {"workers": 2}).
_SETTINGS_KEYS = tuple(name for name, b in registry.BACKENDS.items() if b.has_settings)
DIRECTIONS = ("minimize", "maximize")
# How a parameter's values are given: a list (choice; grid for the grid sampler) or a [low, high] range.
DISTRIBUTIONS = ("choice", "grid", "uniform", "log_uniform")
MAX_TRIALS = 10_000
_KEYS = ("format", "name", "graph", "data", "data_options", "config", "space", "objective", "direction",
         "trials", "parallel", "sampler", "pruner", "backend", *_SETTINGS_KEYS)
_METRIC = re.compile(r"(val|train)_[A-Za-z0-9_]{1,60}")
_CONFIG_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name != "version")


class SweepError(TrainError):
    """A sweep document with problems; `.problems` lists every (field, message), e.g.
    ("space.fc9.out_features", "no node 'fc9' in graph 'mlp' ...")."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems, self.source = list(problems), source
        where = f" {source}" if source else ""
        super().__init__(f"invalid sweep file{where}:\n" + "\n".join(f"  {f}: {m}" for f, m in self.problems))

    def __reduce__(self):
        return (type(self), (self.problems, self.source))


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: `name` is a TrainConfig field or NODE_ID.PARAM."""

    name: str
    kind: str            # one of DISTRIBUTIONS
    values: tuple        # the choices, or (low, high) for uniform / log_uniform
    integer: bool = False  # a range over an integer parameter: sampled as integers

    @property
    def target(self) -> str:
        """'graph' for NODE_ID.PARAM, 'config' for a training setting."""
        return "graph" if "." in self.name else "config"

    def to_dict(self) -> dict:
        return {self.kind: list(self.values)}


@dataclass
class SweepSpec:
    """A parsed, checked sweep. `graph` is the base graph itself (the file names a path)."""

    graph: Graph
    data: str
    space: dict[str, Dimension]
    objective: str
    trials: int
    direction: str = "maximize"
    data_options: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)   # TrainConfig fields: the base of every trial
    parallel: int = 1
    sampler: str = "tpe"
    pruner: str = "none"
    backend: str = registry.DEFAULT_BACKEND
    settings: dict = field(default_factory=dict)  # the backend's settings as the file gives them (Ray: "ray")
    name: str = ""

    def backend_settings(self) -> dict | None:
        """What start_run takes as `backend`: None for local trials, the settings' document otherwise
        (RaySettings' for Ray)."""
        return registry.start_argument(registry.get(self.backend).settings.from_dict(self.settings))

    def to_dict(self, graph_path: str = "graph.json") -> dict:
        """The sweep document, naming the graph by `graph_path` (relative to the sweep file)."""
        return {"format": SWEEP_FORMAT, "name": self.name, "graph": graph_path, "data": self.data,
                "data_options": dict(self.data_options), "config": dict(self.config),
                "space": {k: d.to_dict() for k, d in self.space.items()}, "objective": self.objective,
                "direction": self.direction, "trials": self.trials, "parallel": self.parallel,
                "sampler": self.sampler, "pruner": self.pruner, "backend": self.backend,
                **{key: dict(self.settings) if key == self.backend else {} for key in _SETTINGS_KEYS}}


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; the graph path inside is relative to the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError([("file", f"{str(path)!r} does not exist")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError([("file", f"{str(path)!r} cannot be read: {e}")]) from None
    except json.JSONDecodeError as e:
        raise SweepError([("file", f"{str(path)!r} is not JSON: {e}")]) from None
    except ValueError:  # an integer literal past Python's digit limit (4,300 digits)
        raise SweepError([("file", f"{str(path)!r} holds an integer literal thousands of digits long; use a "
                                   "realistic number")]) from None
    except RecursionError:
        raise SweepError([("file", f"{str(path)!r} is nested too deeply to read")]) from None
    return parse_sweep(doc, base_dir=path.parent, source=str(path))


def parse_sweep(doc: object, *, base_dir: str | Path | None = None, source: str | None = None) -> SweepSpec:
    """Check a sweep document and return it as a SweepSpec; SweepError lists every problem by field.

    `graph` may be a path (relative to `base_dir`) or a graph document inline.
    """
    problems: list[tuple[str, str]] = []
    bad = problems.append
    if not isinstance(doc, dict):
        raise SweepError([("sweep", f"must be a JSON object, got {type(doc).__name__}")], source)
    problem = value_problem(doc)  # NaN, Infinity, integers past int64, nesting hundreds deep: anywhere
    if problem:
        problem = problem.replace("in a graph", "in a sweep").replace("a graph document", "a sweep document")
        raise SweepError([("sweep", problem)], source)
    for key in doc:
        if key not in _KEYS:
            bad((str(key), f"unknown field {key!r}; a studio.sweep/1 document has {', '.join(_KEYS)}"))
    if doc.get("format") != SWEEP_FORMAT:
        bad(("format", f"must be {SWEEP_FORMAT!r}, got {doc.get('format')!r}"))

    graph = _graph(doc.get("graph"), base_dir, bad)
    data = doc.get("data")
    options = doc.get("data_options", {})
    if not isinstance(options, dict):
        bad(("data_options", f"must be a JSON object of dataset options, got {options!r}"))
        options = {}
    if not isinstance(data, str) or not data:
        bad(("data", f"must be a dataset id such as 'digits', got {data!r}"))
    else:
        from studio.data import get_info

        try:
            get_info(data, options=options or None)
        except DataError as e:
            bad(("data", str(e)))

    config = doc.get("config", {})
    base = None
    if not isinstance(config, dict):
        bad(("config", f"must be a JSON object of TrainConfig fields such as {{\"epochs\": 3}}, got {config!r}"))
        config = {}
    else:
        try:
            base = TrainConfig.from_dict(config)
            base.validate()
        except ConfigError as e:
            problems += [(f"config.{f}", m) for f, m in e.problems]
            base = None

    sampler = _one_of(doc, "sampler", SAMPLERS, "tpe", bad)
    pruner = _one_of(doc, "pruner", PRUNERS, "none", bad)
    backend = _one_of(doc, "backend", BACKENDS, registry.DEFAULT_BACKEND, bad)
    settings = _backend_settings(doc, backend, bad)
    space = _space(doc.get("space"), graph, base, sampler, bad)

    objective = doc.get("objective")
    if not isinstance(objective, str) or not _METRIC.fullmatch(objective):
        bad(("objective", f"must name a logged metric such as 'val_accuracy' or 'val_loss', got {objective!r}"))
    default_direction = "maximize" if isinstance(objective, str) and objective in MAXIMIZED_METRICS else "minimize"
    direction = _one_of(doc, "direction", DIRECTIONS, default_direction, bad)

    trials = _count(doc, "trials", None, bad)
    parallel = _count(doc, "parallel", 1, bad)
    if isinstance(trials, int) and isinstance(parallel, int) and parallel > trials:
        parallel = trials  # more slots than trials would stay empty
    if sampler == "grid" and space and isinstance(trials, int):
        points = math.prod(len(d.values) for d in space.values())
        if trials > points:
            bad(("trials", f"trials={trials} is more than the grid's {points} points; set trials to {points} "
                           "(every point once) or fewer"))
    name = doc.get("name", "")
    if not isinstance(name, str):
        bad(("name", f"must be a string, got {name!r}"))
        name = ""
    if problems:
        raise SweepError(problems, source)
    return SweepSpec(graph=graph, data=data, space=space, objective=objective, trials=trials, direction=direction,
                     data_options=dict(options), config=dict(config), parallel=parallel, sampler=sampler,
                     pruner=pruner, backend=backend, settings=settings, name=name or f"sweep of {graph.name}")


def _graph(value, base_dir, bad) -> Graph | None:
    try:
        if isinstance(value, str) and value:
            path = Path(value)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            if not path.is_file():
                bad(("graph", f"the graph file {str(path)!r} does not exist; the path is relative to the sweep file"))
                return None
            return load_graph(path)
        if isinstance(value, dict):
            return parse_graph(value)
        if isinstance(value, Graph):
            return value
        bad(("graph", f"must be the path of a studio.graph/1 file (relative to the sweep file), got {value!r}"))
    except GraphError as e:
        bad(("graph", str(e)))
    except (OSError, ValueError) as e:
        bad(("graph", f"{value!r} cannot be read: {e}"))
    return None


def _backend_settings(doc: dict, backend: str, bad) -> dict:
    """The chosen backend's settings object (checked), and a problem for settings given to another one."""
    chosen = {}
    for key in _SETTINGS_KEYS:
        b = registry.get(key)
        given = doc.get(key, {})
        if not isinstance(given, dict):
            bad((key, f"must be a JSON object of {b.noun} settings such as {json.dumps(b.example)}, got {given!r}"))
        elif given and backend != key:
            bad((key, f"{b.noun} settings are given but \"backend\" is not \"{key}\"; set \"backend\": \"{key}\" "
                      "or drop them"))
        elif backend == key:
            try:
                b.settings.from_dict(given)
            except TrainError as e:
                bad((key, str(e)))
            chosen = dict(given)
    return chosen


def _one_of(doc: dict, key: str, allowed: tuple, default: str, bad) -> str:
    value = doc.get(key, default)
    if value not in allowed:
        bad((key, f"must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}"))
        return default
    return value


def _count(doc: dict, key: str, default: int | None, bad) -> int | None:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        bad((key, f"must be a whole number of trials such as 8, got {value!r}" if key == "trials"
             else f"must be a whole number such as 1, got {value!r}"))
        return None
    if not 1 <= value <= MAX_TRIALS:
        bad((key, f"{key}={value} is out of range; expected 1 <= {key} <= {MAX_TRIALS}"))
        return None
    return value


def _space(space, graph: Graph | None, base: TrainConfig | None, sampler: str, bad) -> dict[str, Dimension]:
    if not isinstance(space, dict) or not space:
        bad(("space", f"must be a non-empty JSON object such as {{\"lr\": {{\"log_uniform\": [1e-4, 0.1]}}}}, "
                      f"got {space!r}"))
        return {}
    out = {}
    for name, value in space.items():
        dim = _dimension(str(name), value, graph, base, sampler, bad)
        if dim is not None:
            out[str(name)] = dim
    return out


def _dimension(name: str, value, graph: Graph | None, base: TrainConfig | None, sampler: str, bad) -> Dimension | None:
    where = f"space.{name}"
    check = _param_check(name, graph, base, where, bad)
    if check is None:
        return None
    problem_of, kind_of_param = check
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        bad((where, f"must be one of {{\"choice\": [...]}}, {{\"grid\": [...]}}, {{\"uniform\": [low, high]}}, "
                    f"{{\"log_uniform\": [low, high]}}, got {value!r}"))
        return None
    kind, values = next(iter(value.items()))
    if kind == "grid" and sampler != "grid":
        bad((where, f"{{\"grid\": ...}} lists values for sampler 'grid' (the sampler is {sampler!r}); write "
                    f"{{\"choice\": {values!r}}} instead, or set \"sampler\": \"grid\""))
        return None
    if kind in ("choice", "grid"):
        if not isinstance(values, list):
            bad((where, f"{kind} must be a list of values, got {values!r}"))
            return None
        if not values:
            bad((where, f"{kind} is empty; list at least one value"))
            return None
        for v in values:
            msg = problem_of(v)
            if msg:
                bad((where, f"the value {v!r} is not accepted: {msg}"))
                return None
        return Dimension(name, kind, tuple(values))
    # a range
    if sampler == "grid":
        bad((where, f"the grid sampler needs the values themselves; write {{\"grid\": [v1, v2, ...]}} instead of "
                    f"{{\"{kind}\": {values!r}}}"))
        return None
    if (not isinstance(values, list) or len(values) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        bad((where, f"{kind} must be [low, high] with two numbers, got {values!r}"))
        return None
    low, high = values
    if not all(math.isfinite(v) for v in values):
        bad((where, f"{kind} bounds must be finite numbers, got {values!r}"))
        return None
    if low >= high:
        bad((where, f"{kind} range [{low}, {high}] is empty; low must be below high"))
        return None
    if kind == "log_uniform" and low <= 0:
        bad((where, f"log_uniform needs low > 0, got [{low}, {high}]; use uniform for ranges that reach 0"))
        return None
    if kind_of_param not in ("int", "float", "size"):
        bad((where, f"{name} takes {kind_of_param} values, not a number range; use {{\"choice\": [...]}}"))
        return None
    integer = kind_of_param in ("int", "size")
    if integer and not all(isinstance(v, int) for v in values):
        bad((where, f"{name} is an integer; give integer bounds, got {values!r}"))
        return None
    for v in values:
        msg = problem_of(v)
        if msg:
            bad((where, f"the bound {v!r} is not accepted: {msg}"))
            return None
    return Dimension(name, kind, (low, high), integer=integer)


def _param_check(name: str, graph: Graph | None, base: TrainConfig | None, where: str, bad):
    """(problem_of(value) -> str | None, param kind) for a searched name; None after reporting it unknown."""
    if "." in name:
        if graph is None:
            return None  # the graph itself is broken: already reported
        from studio.graph_paths import searched_param

        block_param = searched_param(graph, name)  # a block instance's parameter or repeat, by path
        if isinstance(block_param, str):
            bad((where, block_param))
            return None
        if block_param is not None:
            return block_param[2], block_param[3]
        node_id, param = name.split(".", 1)
        ids = [n.id for n in graph.nodes]
        if node_id not in ids:
            bad((where, f"unknown node {node_id!r}: graph {graph.name!r} has no such node; its nodes are "
                        f"{', '.join(ids)}"))
            return None
        from studio.layers import get_spec

        node = graph.node(node_id)
        spec = get_spec(node.type)
        names = [p.name for p in spec.params]
        if param not in names:
            bad((where, f"unknown param {param!r} for node {node_id!r} ({node.type}); its params are "
                        f"{', '.join(names) or 'none'}"))
            return None
        p = spec.param(param)
        return p.problem, p.kind
    if name not in _CONFIG_FIELDS:
        bad((where, f"unknown param {name!r}: neither a training setting ({', '.join(_CONFIG_FIELDS[:8])}, ...) "
                    "nor a graph parameter written NODE_ID.PARAM such as 'fc1.out_features'"))
        return None
    base = base or TrainConfig()
    kind = next(f.metadata["field"].kind for f in fields(TrainConfig) if f.name == name)

    def problem_of(value):
        try:
            problems = TrainConfig.from_dict({**base.to_dict(), name: value}).validate(raise_on_error=False)
        except (ConfigError, TypeError) as e:
            return str(e)
        return next((m for f, m in problems if f == name), None)

    return problem_of, kind


def trial_inputs(spec: SweepSpec, params: dict) -> tuple[Graph, TrainConfig]:
    """The graph and TrainConfig of one trial: the base ones with `params` applied.

    Raises ConfigError when the combination of settings is invalid (the graph is checked by the
    worker, which fails the trial with the analysis message).
    """
    graph = spec.graph.copy()
    changes = {}
    for name, value in params.items():
        if "." in name:
            from studio.graph_paths import with_searched_value

            with_searched_value(graph, name, value)  # NODE_ID.PARAM; an instance's repeat too
        else:
            changes[name] = value
    config = TrainConfig.from_dict({**spec.config, **changes})
    config.validate()
    return graph, config
