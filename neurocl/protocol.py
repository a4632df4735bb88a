"""Protocol files: a model, a task sequence, a scenario, training settings and rules.

Validation happens in two passes, each reporting every problem at once with
``file:line:column: key: message``: the schema (pydantic, unknown keys forbidden), then
the meaning (classes that exist, a scenario that fits the task list, sizes that fit the
model), before anything is written.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, WithJsonSchema, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .config import ConfigError, Strict, Located, load_yaml, parse_override, set_dotted, validate
from .data.transforms import TASK_TRANSFORMS


class DatasetConfig(Strict):
    name: str = "digits"
    root: str | None = None
    encoding: Literal["flat", "rows", "pixels"] = "rows"
    normalise: Literal["none", "standard", "tanh"] = "none"
    max_train: int | None = Field(None, ge=1)
    max_test: int | None = Field(None, ge=1)
    subset_seed: int = 0
    # Cognitive datasets only: pad (or crop) every trial to this many steps; None = the longest.
    steps: int | None = Field(None, ge=2)


class _TaskFields(Strict):
    name: str | None = None
    classes: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1)
    relabel: dict[str, Any] | None = None
    # Epochs for this task; None uses training.epochs (study R5's EWC run: 3 on A, 9 on B).
    epochs: int | None = Field(None, ge=1)
    # Cognitive datasets only: the NeuroGym environment (e.g. PerceptualDecisionMaking) and
    # the keyword arguments of its constructor (dt, timing, ...); see neurocl/data/cognitive.py.
    env: str | None = None
    env_kwargs: dict[str, Any] | None = None


# A task's schema: the fields above plus one key per registered image transform
# (permutation_seed, rotation, ...; neurocl/data/transforms.py), each None (off) by default.
TaskConfig = create_model(
    "TaskConfig", __base__=_TaskFields, __module__=__name__,
    **{t.name: (t.annotation, Field(None, description=t.description)) for t in TASK_TRANSFORMS.values()},
)


class OptimizerConfig(Strict):
    name: Literal["adam", "sgd", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    momentum: float = Field(0.0, ge=0)
    alpha: float = Field(0.99, gt=0, lt=1)  # RMSprop smoothing
    # Reset the optimiser's moments at each task boundary (common in CL code).
    reset_each_task: bool = False
    # torch's fused step (one kernel for all parameters; Adam and SGD only). Same update up to
    # float rounding, so results differ from the unfused step in the last bits.
    fused: bool = False

    @model_validator(mode="after")
    def _fused_optimisers(self):
        if self.fused and self.name == "rmsprop":
            raise ValueError("fused: torch has no fused RMSprop; use adam or sgd, or fused: false")
        return self


class TrainingConfig(Strict):
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    grad_clip: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    # Divergence guard: a loss above this (or NaN/inf) fails the run.
    max_loss: float = Field(1e6, gt=0)


class EvaluationConfig(Strict):
    every: Literal["epoch", "task"] = "epoch"
    batch_size: int = Field(1000, ge=1)
    untrained: bool = True  # accuracy before training, for forward transfer


class ActivityConfig(Strict):
    trials: int = Field(0, ge=0)
    tasks: list[int] | None = None


class RecordingConfig(Strict):
    weight_stats: bool = True
    weights: bool = False  # snapshots of the effective weights after every epoch
    histograms: bool = False
    histogram_bins: int = Field(50, ge=2)
    activity: ActivityConfig = ActivityConfig()


class ExecutionConfig(Strict):
    """How a run executes, not what it computes: excluded from the run id."""

    threads: int | None = Field(None, ge=1)
    device: str = "cpu"
    progress: Literal["auto", "bar", "log", "none"] = "auto"
    # Task-boundary checkpoints to keep: the last one (enough to resume) or all of them.
    keep_checkpoints: Literal["last", "all"] = "last"


Scenario = Literal["task-incremental", "domain-incremental", "class-incremental"]


class ProtocolBase(Strict):
    name: str
    description: str | None = None
    dataset: DatasetConfig | str = DatasetConfig()
    scenario: Scenario = "class-incremental"
    tasks: list[TaskConfig] = Field(min_length=1)
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    seed: int = Field(0, ge=0, lt=2**63)  # torch's generators take 64-bit seeds
    # model: the validated config of one model kind (a union over MODEL_KINDS, see protocol_model)
    recording: RecordingConfig = RecordingConfig()
    execution: ExecutionConfig = ExecutionConfig()

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, v):
        return {"name": v} if isinstance(v, str) else v

    @field_validator("model", mode="before", check_fields=False)
    @classmethod
    def _expand_model(cls, v):
        from .models import expand_model_spec

        try:
            return expand_model_spec(v)
        except ConfigError as err:
            raise PydanticCustomError("model_spec", "{problem}", {"problem": "; ".join(err.messages)}) from None


# What editors see for `model` (the validator expands presets before the kinds are checked).
_MODEL_SCHEMA = {
    "anyOf": [{"type": "string"}, {"type": "object"}],
    "description": "a preset name (models/NAME.yaml), a YAML path, or a mapping: {preset: NAME, key: value, ...} "
                   "or a whole model with its kind (ei-rnn, lstm, mlp, masked-mlp)",
}


@functools.lru_cache(maxsize=None)
def _protocol_model(rule_names: tuple[str, ...], model_kinds: tuple[str, ...]) -> type[BaseModel]:
    from .models import MODEL_KINDS
    from .rules import RULES

    configs = tuple(RULES[n].config_class for n in rule_names)
    rule_type = Annotated[Union[configs], Field(discriminator="name")] if len(configs) > 1 else configs[0]
    kinds = tuple(MODEL_KINDS[k][0] for k in model_kinds)
    model_type = Annotated[Union[kinds], Field(discriminator="kind"), WithJsonSchema(_MODEL_SCHEMA)]
    return create_model(
        "Protocol",
        __base__=ProtocolBase,
        model=(model_type, Field("ei-rnn-64", validate_default=True)),
        rules=(list[rule_type], Field(default_factory=lambda: [{"name": "naive"}], validate_default=True)),
    )


def protocol_model() -> type[BaseModel]:
    """The protocol schema: the fields above, ``model`` a union over the model kinds and
    ``rules`` a list of the registered rules' configs."""
    from .models import MODEL_KINDS
    from .rules import RULES

    return _protocol_model(tuple(sorted(RULES)), tuple(sorted(MODEL_KINDS)))


def json_schema() -> dict:
    return protocol_model().model_json_schema()


# ---------------------------------------------------------------------------- loading
def _apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each ``key=value`` in ``data`` (the caller's own copy) and return it."""
    errors = []
    for text in overrides:
        try:
            key, value = parse_override(text)
            set_dotted(data, key, value)
        except ConfigError as err:
            errors += err.messages
        except (KeyError, ValueError, IndexError) as err:
            errors.append(f"override '{text}': {err}")
    if errors:
        raise ConfigError(errors)
    return data


def normalise(data: dict) -> None:
    """Shorthands spelled out, so that a dotted override can reach inside them: rules given as
    bare names become ``{name: ...}``, and a model given as a preset name ``{preset: ...}``
    (``model.tau=10`` then overrides the preset's tau instead of replacing the preset)."""
    if isinstance(data.get("rules"), list):
        data["rules"] = [{"name": r} if isinstance(r, str) else r for r in data["rules"]]
    if isinstance(data.get("model"), str):
        data["model"] = {"preset": data["model"]}


def _override_errors(err: ConfigError, data_keys: set, overrides: list[str]) -> ConfigError:
    """Point errors caused by an override at the override, not at the file."""
    msgs = []
    keys = {parse_override(o)[0]: o for o in overrides}
    for m in err.messages:
        hit = [o for k, o in keys.items() if f": {k}:" in m or f": {k}." in m]
        msgs.append(f"override '{hit[0]}': {m.split(': ', 1)[1]}" if hit else m)
    return ConfigError(msgs)


def load_protocol(path: str | Path | dict, overrides: list[str] | None = None, check: bool = True):
    """Read, override, validate and check a protocol. Returns the validated model."""
    overrides = list(overrides or [])
    located: Located | None = None
    if isinstance(path, dict):
        data = path
        source = "<protocol>"
    else:
        located = load_yaml(path)
        data = located.data if isinstance(located.data, dict) else {}
        source = str(path)
        if not isinstance(located.data, dict):
            raise ConfigError([f"{path}:1:1: a protocol must be a mapping of keys"])
    data = copy.deepcopy(data)  # the caller's mapping (or the file's, for error positions) stays as it was
    normalise(data)
    data = _apply_overrides(data, overrides)
    try:
        return protocol_from_data(data, located, source, check)
    except ConfigError as err:
        raise _override_errors(err, set(data), overrides) from None


def protocol_from_data(data: dict, located: Located | None, source: str, check: bool = True):
    """Validate a protocol mapping and check its meaning: the one path by which `run`,
    `validate` and every combination of a sweep become a protocol."""
    normalise(data)
    proto = validate(protocol_model(), data, located, source)
    if check:
        problems = check_protocol(proto, located)
        if problems:
            raise ConfigError(problems)
    return proto


def _where(located: Located | None, loc: tuple) -> str:
    if located is None:
        return "<protocol>"
    pos = located.position(loc)
    return f"{located.source}:{pos.line}:{pos.column}" if pos else located.source


def task_output_classes(proto, raw_classes: list[int] | None = None) -> list[list[int]]:
    """The output units each task uses, after relabelling."""
    from .data.transforms import relabel_map

    out = []
    for t in proto.tasks:
        classes = t.classes if t.classes is not None else (raw_classes or list(range(10)))
        mapping = relabel_map(list(classes), t.relabel)
        out.append(sorted({int(mapping[c]) for c in classes}))
    return out


def check_protocol(proto, located: Located | None = None) -> list[str]:
    """Semantic checks against the model and the dataset; every problem at once.

    A dataset that neurocl knows is checked from its registry entry, so the files need not be
    here (a sweep is often prepared on a laptop and run where the data lives); a dataset that
    is absent is a warning from :func:`dataset_warnings`, and an error only when a run starts.
    """
    from .data import DataError, DatasetNotFound, dataset_shape
    from .data.encodings import encoded_shape

    problems: list[str] = []
    model_cfg = proto.model

    is_cognitive = proto.dataset.name.startswith("cognitive")
    shape = None
    if not is_cognitive:
        try:
            shape = dataset_shape(proto.dataset.name, root=proto.dataset.root)
        except DatasetNotFound:
            pass  # an IDX set neurocl does not know, not here: its classes are checked at run time
        except DataError as err:
            problems.append(f"{_where(located, ('dataset',))}: dataset: {err}")
        for i, t in enumerate(proto.tasks):
            if t.env is not None or t.env_kwargs is not None:
                problems.append(f"{_where(located, ('tasks', i))}: tasks.{i}.env: only cognitive datasets take an env")
    else:
        from .data.cognitive import cognitive_problems

        problems += [f"{_where(located, loc)}: {key}: {msg}" for loc, key, msg in cognitive_problems(proto, model_cfg)]
    if shape is not None:
        available = set(shape.classes)
        for i, t in enumerate(proto.tasks):
            if t.classes is None:
                continue
            missing = sorted(set(t.classes) - available)
            if missing:
                problems.append(
                    f"{_where(located, ('tasks', i, 'classes'))}: tasks.{i}.classes: "
                    f"classes {missing} do not exist in {shape.name} (it has {sorted(available)})"
                )
        h, w = shape.image_shape
        steps, width = encoded_shape(proto.dataset.encoding, h, w)
        n_in = getattr(model_cfg, "n_in", None)
        if n_in is not None and n_in != width:
            problems.append(
                f"{_where(located, ('model',))}: model.n_in: the model takes {n_in} inputs per step but "
                f"encoding '{proto.dataset.encoding}' of {shape.name} gives {width} (set model.n_in: {width})"
            )
    need, have = _training_memory(model_cfg)
    if need is not None and have is not None and need > 0.8 * have:
        problems.append(f"{_where(located, ('model',))}: model: training it takes about {need / 2**30:.1f} GiB for its "
                        f"weights, gradients and optimiser state, and this machine has {have / 2**30:.1f} GiB: make it smaller")
    act = proto.recording.activity
    missing_tasks = [j for j in act.tasks or [] if not 0 <= j < len(proto.tasks)]
    if missing_tasks:
        problems.append(f"{_where(located, ('recording', 'activity', 'tasks'))}: recording.activity.tasks: "
                        f"tasks {missing_tasks} do not exist (this protocol has tasks 0-{len(proto.tasks) - 1})")
    import torch

    try:
        torch.device(proto.execution.device)
    except (RuntimeError, ValueError):
        problems.append(f"{_where(located, ('execution', 'device'))}: execution.device: '{proto.execution.device}' "
                        "is not a device (cpu, cuda, cuda:N or mps)")
    if problems:
        return problems
    try:
        if is_cognitive:
            from .data.cognitive import cognitive_output_classes

            outputs = cognitive_output_classes(proto)
        else:
            outputs = task_output_classes(proto, sorted(shape.classes) if shape is not None else None)
    except (DataError, ValueError, KeyError) as err:
        return [f"{_where(located, ('tasks',))}: tasks: {err}"]
    n_out = getattr(model_cfg, "n_out", None)
    for i, cls in enumerate(outputs):
        if n_out is not None and cls and max(cls) >= n_out:
            problems.append(
                f"{_where(located, ('tasks', i))}: tasks.{i}: output class {max(cls)} needs at least "
                f"{max(cls) + 1} outputs but the model has n_out = {n_out}"
            )
    # Cognitive tasks share one fixate + responses head by construction; a go/no-go task just
    # uses fewer of its outputs than a two-choice task, so they need not list the same ones.
    if proto.scenario == "domain-incremental" and not is_cognitive:
        for i, cls in enumerate(outputs[1:], start=1):
            if cls != outputs[0]:
                problems.append(
                    f"{_where(located, ('tasks', i))}: scenario: domain-incremental tasks must share their "
                    f"outputs, but task {i} uses {cls} and task 0 uses {outputs[0]} (relabel them, e.g. "
                    f"relabel: {{offset: min}})"
                )
    elif proto.scenario == "class-incremental":
        seen: dict[int, int] = {}
        for i, cls in enumerate(outputs):
            clash = sorted(c for c in cls if c in seen)
            if clash:
                problems.append(
                    f"{_where(located, ('tasks', i))}: scenario: class-incremental tasks must add new classes, "
                    f"but task {i} reuses output classes {clash} of task {seen[clash[0]]} "
                    f"(use domain-incremental for a shared relabelled head)"
                )
            for c in cls:
                seen.setdefault(c, i)
    return problems


def _training_memory(model_cfg) -> tuple[int | None, int | None]:
    """(bytes training the model needs, bytes of memory this machine has), None where unknown."""
    import os

    from .models import training_bytes

    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        have = None
    return training_bytes(model_cfg), have


def device_problem(proto) -> str | None:
    """Why this machine cannot run ``proto`` on its device (a GPU it does not have), or None."""
    import torch

    device = torch.device(proto.execution.device)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA device"
        return f"execution.device: {device} is not available here ({have}); run it where it is, or set execution.device=cpu"
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        return "execution.device: mps is not available here; set execution.device=cpu"
    return None


def leak_warnings(proto) -> list[str]:
    """An E/I network whose units are too slow to integrate a trial's input (the spec's
    arithmetic: a = dt/tau = 0.02 over 28 rows integrates 1 - 0.98^28 = 43 % of a step input).
    A warning: slow units may be the point of a study."""
    model = proto.model
    if getattr(model, "kind", None) != "ei-rnn" or proto.dataset.name.startswith("cognitive"):
        return []
    from .data import dataset_shape
    from .data.encodings import encoded_shape

    try:
        steps, _ = encoded_shape(proto.dataset.encoding, *dataset_shape(proto.dataset.name, root=proto.dataset.root).image_shape)
    except Exception:  # the data check reports an unreadable dataset; nothing to say here
        return []
    taus = sorted(model.taus)
    a = model.dt / taus[len(taus) // 2]
    share = 1 - (1 - a) ** steps
    if share >= 0.63:
        return []
    return [f"model.tau: over a trial of {steps} steps a unit with tau {taus[len(taus) // 2]:g} (dt {model.dt:g}) "
            f"integrates only {100 * share:.0f} % of a constant input, so the network may not learn the task; "
            f"choose tau <= {steps * model.dt:g} (dt/tau >= 1/{steps}) for >= 63 %, or see docs/dale.md"]


def dataset_warnings(proto) -> list[str]:
    """Why a run of ``proto`` could not start on this machine as things are: its dataset's
    files are not here, or its device. A warning, not an error: the run may be meant for
    another machine (a cluster where the data and the GPUs are)."""
    from .data import DatasetNotFound, find_dataset

    warnings = []
    try:
        find_dataset(proto.dataset.name, root=proto.dataset.root)
    except DatasetNotFound as err:
        warnings.append(f"dataset: {err}")
    device = device_problem(proto)
    return warnings + ([device] if device else [])


def resolved_config(proto) -> dict:
    """The fully resolved configuration, every default filled in (what ``config.json`` holds)."""
    return json.loads(json.dumps(proto.model_dump(mode="json")))


# ---------------------------------------------------------------------------- run ids
# Settings that change how a run executes, not what it computes: never part of the run id.
EXECUTION_KEYS = ("execution",)


def _json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return json.loads(json.dumps(value, default=list))


@functools.lru_cache(maxsize=None)
def _defaults(cls: type[BaseModel]) -> dict:
    """Every field that has a default, keyed as a resolved configuration spells it."""
    try:
        return cls().model_dump(mode="json")
    except ValueError:  # required fields (a protocol's name and tasks): dump the others alone
        return {
            (f.serialization_alias or f.alias or n) if cls.model_config.get("serialize_by_alias") else n:
                _json(f.get_default(call_default_factory=True))
            for n, f in cls.model_fields.items() if not f.is_required()
        }


def _submodel(cls: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The pydantic model a field of ``cls`` holds (through Optional and unions), if any."""
    import typing

    field = cls.model_fields.get(key) or next(
        (f for f in cls.model_fields.values() if key in (f.alias, f.serialization_alias)), None
    )
    if field is None:
        return None
    todo = [field.annotation]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
        todo += typing.get_args(t)
    return None


def _prune(data: dict, cls: type[BaseModel], defaults: dict, keep: tuple[str, ...] = ()) -> dict:
    """``data`` without the values equal to ``defaults``, recursively; ``keep`` names the keys
    that say which schema applies (a model's kind, a rule's name), kept even at their default
    so that two model kinds or rules whose other values are all defaults never share an id."""
    out = {}
    for key, value in data.items():
        if key in defaults and defaults[key] == value and key not in keep:
            continue
        sub = _submodel(cls, key)
        if sub is not None and isinstance(value, dict):
            nested = defaults.get(key)
            value = _prune(value, sub, nested if isinstance(nested, dict) else _defaults(sub))
            if not value and isinstance(nested, dict):
                continue  # every value it has is a default: the same as the default block
        out[key] = value
    return out


def canonical_config(config: dict) -> dict:
    """The form of a resolved configuration that its run id hashes.

    Execution settings are dropped, and so is every value equal to its schema's default (the
    model's against its kind's defaults, each rule's against its own, each task's against a
    task's), keeping the ``kind`` and ``name`` that say which schema applies. Adding an option
    with a default therefore renames no stored run. See docs/protocols.md, "Run ids".
    """
    from .models import model_config_class
    from .rules import RULES

    config = _json({k: v for k, v in config.items() if k not in EXECUTION_KEYS})
    cls = protocol_model()
    out = _prune({k: v for k, v in config.items() if k not in ("model", "rules", "tasks")}, cls, _defaults(cls))
    model = config.get("model")
    if isinstance(model, dict):
        model_cls = model_config_class(model.get("kind", "ei-rnn"))
        out["model"] = _prune(model, model_cls, _defaults(model_cls), keep=("kind",))
    if "tasks" in config:
        out["tasks"] = [_prune(t, TaskConfig, _defaults(TaskConfig)) for t in config["tasks"]]
    if "rules" in config:
        def prune_rules(rules: list) -> list:
            return [
                _prune(r, RULES[r["name"]].config_class, _defaults(RULES[r["name"]].config_class), keep=("name",))
                for r in rules
            ]

        rules = prune_rules(config["rules"])
        if rules != prune_rules(_json(cls.model_fields["rules"].get_default(call_default_factory=True))):
            out["rules"] = rules
    return out


def config_run_id(config: dict) -> str:
    """The run id of a resolved configuration: a hash of :func:`canonical_config`."""
    from .store import hash_config

    return hash_config(canonical_config(config))


def protocol_run_id(proto) -> str:
    """The run id of a validated protocol."""
    return config_run_id(resolved_config(proto))
