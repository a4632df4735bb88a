"""Sweep files: a base protocol and its variations, expanded to runs of the store.

A sweep file names a base protocol (a path relative to the sweep file) and how to vary it
(or, as a suite, ``include: [other sweep files]`` to run all of theirs)::

    protocol: ../protocols/split-digits.yaml
    set:  {training.epochs: 1}                    # applied to every run
    grid: {rules: [[naive], [joint]], training.optimizer.lr: [0.01, 0.02]}   # cartesian product
    zip:  {training.batch_size: [16, 32], training.epochs: [1, 2]}          # varied together
    list: [{dataset.encoding: flat, model.n_in: 64}, {}]                    # explicit sets
    seeds: 3                                       # or [0, 7, 9]; sets the protocol's ``seed``

Every combination (list entry x zip row x grid point x seed) becomes one resolved protocol
configuration whose run id is the store's hash of it, so two combinations that resolve to the
same configuration are one run, and a run finished by any earlier sweep (or ``neurocl run``) is
never run again. Problems are reported all at once, each with ``file:line:column`` of the
sweep key that caused it.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from pydantic import Field, field_validator, model_validator

from .config import ConfigError, Strict, Located, load_yaml, set_dotted, validate


# ---------------------------------------------------------------------------- schema
class LocalSettings(Strict):
    """The process-pool executor (``--executor local``, the default)."""

    workers: Optional[int] = Field(None, ge=1)  # default: the number of CPU cores
    threads: int = Field(1, ge=1)  # torch threads per worker, so N workers use N cores
    max_attempts: int = Field(3, ge=1)  # a run whose worker dies this often is marked FAILED
    # Seconds a worker waits for a run that another process holds (a second sweep over the
    # same store) before it skips it; a skipped run is left for the next `sweep run`.
    lock_wait_s: float = Field(30.0, ge=0)


class SlurmSettings(Strict):
    """The SLURM executor (``--executor slurm``), through submitit."""

    partition: Optional[str] = None
    time: Union[int, str] = 60  # per array task: minutes, or "HH:MM:SS" / "D-HH:MM:SS"
    cpus_per_task: int = Field(1, ge=1)
    mem: Optional[str] = None  # e.g. "4G"; SLURM's own syntax
    runs_per_job: int = Field(1, ge=1)  # runs packed, one after the other, into one array task
    max_array_size: Optional[int] = Field(None, ge=1)  # default: MaxArraySize of the cluster
    array_parallelism: Optional[int] = Field(None, ge=1)  # at most this many tasks at once
    max_requeues: int = Field(3, ge=0)  # requeues after a time-out (preemptions are unlimited)
    signal_delay_s: int = Field(90, ge=1)  # warning before the time limit, to checkpoint
    job_name: Optional[str] = None
    setup: List[str] = Field(default_factory=list)  # shell lines run before the job (module load ...)
    params: Dict[str, Any] = Field(default_factory=dict)  # extra sbatch parameters, e.g. {account: lab}

    @field_validator("time")
    @classmethod
    def _time(cls, v):
        time_minutes(v)  # raises ValueError with the accepted forms
        return v


class SweepFile(Strict):
    name: Optional[str] = None  # default: the sweep file's stem
    description: Optional[str] = None
    protocol: Optional[str] = None
    # A suite: the runs of other sweep files (paths relative to this file), instead of a protocol.
    include: List[str] = Field(default_factory=list)
    set_: Dict[str, Any] = Field(default_factory=dict, alias="set")
    grid: Dict[str, List[Any]] = Field(default_factory=dict)
    zip_: Union[Dict[str, List[Any]], List[Dict[str, List[Any]]]] = Field(default_factory=dict, alias="zip")
    list_: List[Dict[str, Any]] = Field(default_factory=list, alias="list")
    seeds: Union[int, List[int], None] = None
    local: LocalSettings = LocalSettings()
    slurm: SlurmSettings = SlurmSettings()

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        # It names the sweep's manifest file in the store and its SLURM jobs.
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("a sweep name may hold letters, digits, '.', '_' and '-' only")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("a seed count must be at least 1")
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError("seeds are repeated")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v):
        empty = [k for k, vals in v.items() if not vals]
        if empty:
            raise ValueError(f"grid keys without values: {', '.join(empty)}")
        return v

    @field_validator("zip_")
    @classmethod
    def _zip_lengths(cls, v):
        for group in [v] if isinstance(v, dict) else v:
            lengths = {k: len(vals) for k, vals in group.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(
                    "zip lists must have the same length, got " + ", ".join(f"{k}: {n}" for k, n in lengths.items())
                )
        return v

    @model_validator(mode="after")
    def _protocol_or_include(self):
        if self.include:
            varied = [k for k, v in (("protocol", self.protocol), ("set", self.set_), ("grid", self.grid),
                                     ("zip", self.zip_), ("list", self.list_), ("seeds", self.seeds)) if v]
            if varied:
                raise ValueError(f"a sweep that includes other sweep files takes no {', '.join(varied)} "
                                 "(set them in the included files)")
        elif self.protocol is None:
            raise ValueError("a sweep file needs 'protocol' (the base protocol) or 'include' (other sweep files)")
        return self

    def zip_groups(self) -> list[dict[str, list]]:
        return [self.zip_] if isinstance(self.zip_, dict) else list(self.zip_)


def time_minutes(value: int | str) -> int:
    """SLURM time limit in whole minutes from minutes, "MM", "HH:MM:SS" or "D-HH:MM:SS"."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError("the time limit must be at least 1 minute")
        return value
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+)(?::(\d+))?", str(value).strip())
    if not m:
        raise ValueError(f"time '{value}' is not minutes, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = m.groups()
    if c is not None:  # [D-]HH:MM:SS
        h, mnt, s = int(a or 0), int(b), int(c)
    elif a is not None:  # [D-]HH:MM  (SLURM reads "D-HH:MM"; "MM:SS" without a day is rare: treat as HH:MM)
        h, mnt, s = int(a), int(b), 0
    else:
        h, mnt, s = (int(b), 0, 0) if days else (0, int(b), 0)
    total = int(days or 0) * 24 * 60 + h * 60 + mnt + (1 if s else 0)
    if total < 1:
        raise ValueError("the time limit must be at least 1 minute")
    return total


# ---------------------------------------------------------------------------- expansion
@dataclass
class SweepRun:
    """One run of a sweep: its id in the store, its resolved configuration and how it was made."""

    id: str
    config: dict
    overrides: list[tuple[str, Any]]
    labels: list[str] = field(default_factory=list)  # every combination that gave this run

    @property
    def label(self) -> str:
        return self.labels[0] if self.labels else self.id


@dataclass
class Sweep:
    name: str
    path: Path | None
    spec: SweepFile
    protocol_path: Path | None  # None for a suite (``include``)
    runs: list[SweepRun]
    n_combinations: int
    included: list["Sweep"] = field(default_factory=list)

    def manifest(self) -> dict:
        protocols = [self.protocol_path] if self.protocol_path else [s.protocol_path for s in self.included]
        return {
            "name": self.name,
            "sweep_file": str(self.path.resolve()) if self.path else None,
            "protocol": str(protocols[0].resolve()) if len(protocols) == 1 else None,
            "protocols": [str(p.resolve()) for p in protocols],
            "included": [str(s.path.resolve()) for s in self.included if s.path],
            "n_combinations": self.n_combinations,
            "runs": [{"id": r.id, "label": r.label} for r in self.runs],
            "expanded": time.time(),
        }


def _fmt(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


def _label(overrides: list[tuple[str, Any]]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in overrides) or "(base)"


def combinations(spec: SweepFile) -> list[list[tuple[str, Any, tuple]]]:
    """Every combination as (dotted key, value, location of the key in the sweep file)."""
    fixed = [(k, v, ("set", k)) for k, v in spec.set_.items()]
    listed = [[(k, v, ("list", i, k)) for k, v in entry.items()] for i, entry in enumerate(spec.list_)] or [[]]
    zipped: list[list[list]] = []
    for g, group in enumerate(spec.zip_groups()):
        if not group:
            continue
        where = (lambda k, g=g: ("zip", k)) if isinstance(spec.zip_, dict) else (lambda k, g=g: ("zip", g, k))
        n = len(next(iter(group.values())))
        zipped.append([[(k, vals[i], where(k)) for k, vals in group.items()] for i in range(n)])
    grid_axes = [[(k, v, ("grid", k)) for v in vals] for k, vals in spec.grid.items()]
    if spec.seeds is None:
        seeds: list = [[]]
    else:
        values = list(range(spec.seeds)) if isinstance(spec.seeds, int) else spec.seeds
        seeds = [[("seed", s, ("seeds",))] for s in values]
    out = []
    for entry in listed:
        for rows in itertools.product(*zipped) if zipped else [()]:
            for point in itertools.product(*grid_axes) if grid_axes else [()]:
                for seed in seeds:
                    combo = fixed + entry + [x for row in rows for x in row] + list(point) + seed
                    out.append(combo)
    return out


_MESSAGE = re.compile(r"^(?P<where>.*?:\d+:\d+|<[^>]*>): (?P<key>[^ ]+): (?P<msg>.*)$", re.S)


def _where(located: Located, loc: tuple) -> str:
    pos = located.position(loc)
    return f"{located.source}:{pos.line}:{pos.column}" if pos else located.source


def _blame(messages: list[str], combo: list[tuple[str, Any, tuple]], located: Located) -> list[str]:
    """Point an error caused by a sweep key at that key in the sweep file, naming it."""
    out = []
    for m in messages:
        hit = _MESSAGE.match(m)
        culprit = None
        if hit:
            key = hit["key"]
            for k, v, loc in combo:
                if key == k or key.startswith(k + ".") or k.startswith(key + "."):
                    culprit = (k, v, loc)
        if culprit is None:
            out.append(m)
            continue
        k, v, loc = culprit
        # A misspelt key is wrong for every value: say it once; a bad value is worth showing.
        value = "" if hit["msg"].startswith("unknown key") else f" = {_fmt(v)}"
        out.append(f"{_where(located, loc)}: {loc[0]} '{k}{value}': {hit['key']}: {hit['msg']}")
    return out


def _with_keys(base: Located, data: dict, combo: list[tuple[str, Any, tuple]]) -> Located:
    """The base protocol's positions plus the keys the sweep added.

    Error formatting drops path parts it cannot place in the file; a key that only the sweep
    sets (``training.optimizer.lr`` on a protocol without ``optimizer``) must keep its full
    name so that the error can be blamed on the sweep key.
    """
    positions = dict(base.positions)
    for k, _, _ in combo:
        path: tuple = ()
        for part in k.split("."):
            path += (int(part) if part.isdigit() else part,)
            positions.setdefault(path, positions.get(path[:-1], base.positions[()]))
    return Located(data, positions, base.source)


def _apply(data: dict, combo: list[tuple[str, Any, tuple]], located: Located) -> list[str]:
    errors = []
    for k, v, loc in combo:
        try:
            set_dotted(data, k, copy.deepcopy(v))
        except (KeyError, ValueError, IndexError, TypeError) as err:
            errors.append(f"{_where(located, loc)}: {loc[0]} '{k}': {err}")
    return errors


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file and expand it; ConfigError lists every problem."""
    path = Path(path)
    return _load(path, seen=(path.resolve(),))


def _load(path: Path, seen: tuple[Path, ...]) -> Sweep:
    """One sweep file, expanded; ``seen``: the suites including it (and itself), against cycles."""
    located = load_yaml(path)
    if not isinstance(located.data, dict):
        raise ConfigError([f"{path}:1:1: a sweep file must be a mapping of keys"])
    spec = validate(SweepFile, located.data, located, str(path))
    if spec.include:
        return _suite(spec, located, path, seen)
    return expand(spec, located, path)


def _suite(spec: SweepFile, located: Located, path: Path, seen: tuple[Path, ...]) -> Sweep:
    """The runs of every included sweep file, once each (labels name the sweep they came from)."""
    errors: list[str] = []
    parts: list[Sweep] = []
    for i, rel in enumerate(spec.include):
        sub = (path.parent / rel).resolve()
        where = _where(located, ("include", i))
        if sub in seen:
            errors.append(f"{where}: include: {rel} includes itself")
            continue
        if not sub.is_file():
            errors.append(f"{where}: include: no such file: {sub}")
            continue
        try:
            parts.append(_load(sub, seen + (sub,)))
        except ConfigError as err:
            errors += err.messages
    if errors:
        raise ConfigError(list(dict.fromkeys(errors)))
    runs: dict[str, SweepRun] = {}
    for part in parts:
        for run in part.runs:
            labels = [f"{part.name}: {label}" for label in run.labels]
            if run.id in runs:
                runs[run.id].labels += labels
            else:
                runs[run.id] = SweepRun(id=run.id, config=run.config, overrides=run.overrides, labels=labels)
    return Sweep(name=spec.name or path.stem, path=path, spec=spec, protocol_path=None, runs=list(runs.values()),
                 n_combinations=sum(p.n_combinations for p in parts), included=parts)


def expand(spec: SweepFile, located: Located, path: Path | None = None) -> Sweep:
    from .protocol import config_run_id, normalise, protocol_from_data, resolved_config

    base_dir = path.parent if path is not None else Path.cwd()
    proto_path = (base_dir / spec.protocol) if not Path(spec.protocol).is_absolute() else Path(spec.protocol)
    if not proto_path.is_file():
        raise ConfigError([f"{_where(located, ('protocol',))}: protocol: no such file: {proto_path}"])
    base = load_yaml(proto_path)
    if not isinstance(base.data, dict):
        raise ConfigError([f"{proto_path}:1:1: a protocol must be a mapping of keys"])

    errors: list[str] = []
    runs: dict[str, SweepRun] = {}
    combos = combinations(spec)
    for combo in combos:
        data = copy.deepcopy(base.data)
        # Shorthands spelled out first (rules by name, a model by preset name), so that a key
        # such as ``rules.0.lambda`` or ``model.tau`` can be set; the same path as `run` after.
        normalise(data)
        problems = _apply(data, combo, located)
        if problems:
            errors += problems
            continue
        try:
            proto = protocol_from_data(data, _with_keys(base, data, combo), str(proto_path))
        except ConfigError as err:
            errors += _blame(err.messages, combo, located)
            continue
        config = resolved_config(proto)
        rid = config_run_id(config)
        overrides = [(k, v) for k, v, _ in combo]
        label = _label([(k, v) for k, v, loc in combo if loc[0] != "set"])
        if rid in runs:
            runs[rid].labels.append(label)
        else:
            runs[rid] = SweepRun(id=rid, config=config, overrides=overrides, labels=[label])
    if errors:
        raise ConfigError(list(dict.fromkeys(errors)))  # the same problem in many combinations once
    name = spec.name or (path.stem if path is not None else "sweep")
    return Sweep(name=name, path=path, spec=spec, protocol_path=proto_path, runs=list(runs.values()), n_combinations=len(combos))
