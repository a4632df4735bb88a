"""Cognitive tasks from NeuroGym as neurocl tasks: fixed, seeded trial sets on one layout.

NeuroGym (a dependency) defines each task's trial structure: its periods, observations and
per-step ground truth. This module turns a protocol's task list into :class:`Task` objects
the runner trains on, and owns the three choices NeuroGym leaves open:

**Trials.** Each task gets a fixed number of train and test trials (``dataset.max_train`` and
``dataset.max_test``, default 1000 and 500), generated trial by trial with ``env.new_trial()``
from an environment seeded with a seed derived from (protocol seed, ``dataset.subset_seed``,
task index, split). The same protocol therefore gives bit-identical trials; another seed gives
other trials. NeuroGym's ``Dataset`` helper is not used: it streams trials back to back and
cuts them at arbitrary points, while a continual-learning task needs whole, aligned trials and
the per-trial conditions (coherence, correct choice) for psychometric analysis.

**Input layout** (the E/I network has one fixed ``n_in``), after Yang et al. (2019)::

    [ fixation | task 0 stimulus channels | task 1 stimulus channels | ... | rule one-hot ]

The fixation cue is shared by all tasks; each environment's other observation channels get
their own disjoint slot (different environments do not share stimulus inputs, so their
interference is in the recurrent and output weights, not in the input encoding; tasks of the
same environment, e.g. the two contexts of ContextDecisionMaking, share its slot); one rule
input per task of the sequence is on for the whole trial and tells the network which task it
is doing. Inputs must be >= 0 (the
E/I network's input weights are excitatory), so observations are rectified: NeuroGym's
stimuli are non-negative means (around 0.5) plus Gaussian noise, and only the noise tail
below 0 is cut (the clipped fraction is in ``meta``). Environments that code information in
negative values (cosine/sine codes) are not a good fit for this layout.

**Output layout**: class 0 is "fixate", classes 1..K the responses. An environment's
fixation action maps to 0 and its other actions, in order, to 1, 2, ...; so a two-choice
task uses [0, 1, 2] and go/no-go uses [0, 1] (go = 1). All tasks share this head: the
protocols use the domain-incremental scenario, with the rule input as the task cue.

**Targets and masks.** ``y`` is the per-step target (N, T). Trials are padded at the end to
the longest trial of the protocol (or cropped to ``dataset.steps``); padded steps have target
0 and mask 0. The train mask holds loss weights after Yang et al. (2019): 1 before the
response period and ``RESPONSE_WEIGHT`` (10) in it, so the decision is not swamped by the
many fixation steps. The test
mask is 1 in the response period only, so the runner's test accuracy is the fraction of
response steps with the correct output (for a one-step decision period, the fraction of
correct choices), as NeuroGym scores performance. The response period is the environment's
``decision`` period, or, for environments without one, the steps whose target is not
"fixate".
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .tasks import Task, TaskSplit

DEFAULT_TRAIN_TRIALS = 1000
DEFAULT_TEST_TRIALS = 500
PRE_RESPONSE_WEIGHT = 1.0  # loss weight of the steps before the response period
# Loss weight of response-period steps. Yang et al. (2019) use 5 at dt = 20 ms; at NeuroGym's
# dt = 100 ms a trial has five times fewer steps, and with 5 the E/I network sat in the
# "always fixate / always one side" solution on PerceptualDecisionMaking (0.58 after 20k
# trials, where 10 gave 0.87; docs/cognitive.md).
RESPONSE_WEIGHT = 10.0
FIXATION_CLASS = 0


# ---------------------------------------------------------------------------- environments
def _neurogym():
    try:
        import neurogym  # noqa: F401 (registers the environments with gymnasium)
    except ImportError as err:  # pragma: no cover - neurogym is a dependency
        raise DataError("cognitive tasks need NeuroGym: pip install neurogym") from err
    return neurogym


def known_envs() -> list[str]:
    """NeuroGym's registered environment ids (``PerceptualDecisionMaking-v0``, ...)."""
    _neurogym()
    from neurogym.envs.registration import ALL_EXTENDED_ENVS

    return sorted(ALL_EXTENDED_ENVS)


def custom_env_class(name: str):
    """The TrialEnv subclass a ``"package.module:ClassName"`` names (a task of your own, written
    as NeuroGym's are); DataError saying what is wrong otherwise."""
    import importlib

    _neurogym()
    module_name, _, class_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise DataError(f"env '{name}': cannot import {module_name} ({err}); the module must be importable "
                        f"(installed, or on PYTHONPATH)") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise DataError(f"env '{name}': {module_name} has no {class_name}")
    from neurogym.core import TrialEnv

    if not (isinstance(cls, type) and issubclass(cls, TrialEnv)):
        raise DataError(f"env '{name}': {class_name} is not a subclass of neurogym.TrialEnv")
    return cls


def env_id(name: str) -> str:
    """A NeuroGym id from a name with or without its ``-v0`` suffix, or ``"module:Class"`` for
    a TrialEnv subclass of your own (checked, returned as it is)."""
    if ":" in name:
        custom_env_class(name)
        return name
    ids = known_envs()
    for candidate in (name, f"{name}-v0"):
        if candidate in ids:
            return candidate
    close = difflib.get_close_matches(name, ids + [i.removesuffix("-v0") for i in ids], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise DataError(f"'{name}' is not a NeuroGym environment{hint}")


def make_env(name: str, kwargs: Mapping[str, Any] | None = None):
    """The unwrapped NeuroGym ``TrialEnv`` (trials are generated with ``new_trial``, not stepped)."""
    ngym = _neurogym()
    eid = env_id(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gymnasium's notes about envs without render modes
            if ":" in eid:
                env = custom_env_class(eid)(**dict(kwargs or {}))
            else:
                env = ngym.make(eid, **dict(kwargs or {})).unwrapped
    except (TypeError, ValueError, KeyError) as err:  # what the env constructors raise on bad kwargs
        raise DataError(f"{eid}: bad env_kwargs: {err}") from err
    if not hasattr(env, "new_trial"):
        raise DataError(f"{eid} is not a trial-based NeuroGym environment")
    return env


def _indices(value) -> list[int]:
    return [int(value)] if np.isscalar(value) else [int(v) for v in value]


@dataclass(frozen=True)
class EnvSpec:
    """What the layout needs to know about one environment (no trials generated)."""

    env_id: str
    kwargs: dict
    dt: float
    obs_names: dict
    fixation_obs: int | None  # observation channel of the fixation cue
    stimulus_obs: tuple[int, ...]  # the other observation channels, in order
    action_classes: tuple[int, ...]  # env action a -> global output class action_classes[a]
    action_names: dict


def env_spec(name: str, kwargs: Mapping[str, Any] | None = None) -> EnvSpec:
    eid = env_id(name)
    env = make_env(eid, kwargs)
    ob_space, ac_space = env.observation_space, env.action_space
    if ob_space.shape is None or len(ob_space.shape) != 1:
        raise DataError(f"{eid}: observations must be a vector per step, got shape {ob_space.shape}")
    if not hasattr(ac_space, "n"):
        raise DataError(f"{eid}: cognitive tasks need a discrete action space (got {type(ac_space).__name__})")
    ob_names = dict(getattr(ob_space, "name", None) or {})
    ac_names = dict(getattr(ac_space, "name", None) or {})
    if "fixation" not in ac_names:
        raise DataError(f"{eid}: has no 'fixation' action; the shared output head needs one")
    fix_action = _indices(ac_names["fixation"])[0]
    classes, k = [], 1
    for a in range(int(ac_space.n)):
        classes.append(FIXATION_CLASS if a == fix_action else k)
        k += a != fix_action
    fix_obs = _indices(ob_names["fixation"])[0] if "fixation" in ob_names else None
    stim = tuple(c for c in range(ob_space.shape[0]) if c != fix_obs)
    return EnvSpec(
        env_id=eid, kwargs=dict(kwargs or {}), dt=float(env.dt),
        obs_names={k: _indices(v) for k, v in ob_names.items()}, fixation_obs=fix_obs,
        stimulus_obs=stim, action_classes=tuple(classes),
        action_names={k: _indices(v) for k, v in ac_names.items()},
    )


# ---------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """Where each task's observations go in the shared input, and its output classes."""

    specs: tuple[EnvSpec, ...]
    slot_offsets: tuple[int, ...]  # first input unit of each task's stimulus slot
    rule_offset: int  # first rule input unit (one per task)
    n_in: int
    n_out: int

    def classes(self, i: int) -> list[int]:
        return sorted(set(self.specs[i].action_classes))

    def describe(self) -> dict:
        slots = {"fixation": [0]}
        for s, off in zip(self.specs, self.slot_offsets):
            slots[s.env_id] = list(range(off, off + len(s.stimulus_obs)))
        slots["rule"] = list(range(self.rule_offset, self.n_in))
        return slots


def make_layout(specs: list[EnvSpec]) -> Layout:
    offsets, cursor, slot_of = [], 1, {}  # input 0 is the shared fixation cue
    for s in specs:
        # Tasks of one environment (e.g. the two contexts of ContextDecisionMaking) see their
        # stimuli on the same inputs and differ only in the rule input, as in Yang et al.
        key = (s.env_id, s.stimulus_obs)
        if key not in slot_of:
            slot_of[key] = cursor
            cursor += len(s.stimulus_obs)
        offsets.append(slot_of[key])
    n_out = 1 + max(max(s.action_classes) for s in specs)
    return Layout(tuple(specs), tuple(offsets), cursor, cursor + len(specs), n_out)


# ---------------------------------------------------------------------------- trials
def trial_seed(protocol_seed: int, subset_seed: int, task_index: int, split: str) -> int:
    """The seed of one split of one task: independent streams for every (seed, task, split)."""
    entropy = [int(protocol_seed) % 2**32, int(subset_seed) % 2**32, int(task_index), {"train": 0, "test": 1}[split]]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@dataclass
class Trials:
    """Raw NeuroGym trials of one split, before layout and padding."""

    ob: list[np.ndarray]  # (T_i, n_obs) each
    gt: list[np.ndarray]  # (T_i,) env actions
    response: list[tuple[int, int]]  # [start, end) step of each trial's response period
    info: list[dict]  # NeuroGym's trial dict


def _response_period(env, gt: np.ndarray, fix_action: int) -> tuple[int, int]:
    if "decision" in env.start_ind:
        start, end = int(env.start_ind["decision"]), int(env.end_ind["decision"])
        if end > start:
            return start, min(end, len(gt))
    active = np.flatnonzero(gt != fix_action)
    return (int(active[0]), int(active[-1]) + 1) if active.size else (len(gt), len(gt))


def example_trials(name: str, kwargs: Mapping[str, Any] | None = None, n: int = 1, seed: int = 0) -> Trials:
    """``n`` trials of an environment (a NeuroGym name or ``"module:Class"``) as a protocol's task
    would see them before encoding: per trial the observations (steps, channels), the target
    action per step, the response period and the trial's conditions. To look at a task::

        t = example_trials("PerceptualDecisionMaking", {"dt": 100}, seed=3)
        t.ob[0], t.gt[0], t.response[0], t.info[0]
    """
    return generate_trials(make_env(name, kwargs), n, seed)


def generate_trials(env, n: int, seed: int) -> Trials:
    """``n`` trials from ``env`` seeded with ``seed`` (its RNG and its timing distributions)."""
    env.seed(seed)
    fix_action = _indices(env.action_space.name["fixation"])[0]
    out = Trials([], [], [], [])
    for _ in range(n):
        info = env.new_trial()
        ob = np.array(env.ob, dtype=np.float32, copy=True)
        gt = np.array(env.gt, dtype=np.int64, copy=True).reshape(len(ob))
        out.ob.append(ob)
        out.gt.append(gt)
        out.response.append(_response_period(env, gt, fix_action))
        out.info.append(dict(info))
    return out


def _numeric_info(infos: list[dict]) -> dict[str, torch.Tensor]:
    """The per-trial conditions that are plain numbers (coherence, ground truth, ...)."""
    keys = [k for k in infos[0] if all(k in d and np.ndim(d[k]) == 0 for d in infos)]
    out = {}
    for k in keys:
        try:
            out[k] = torch.tensor([float(d[k]) for d in infos], dtype=torch.float64)
        except (TypeError, ValueError):
            continue  # strings and other labels are not kept
    return out


def encode_trials(trials: Trials, layout: Layout, task: int, steps: int, split: str) -> tuple[TaskSplit, dict]:
    """Trials -> a :class:`TaskSplit` on the shared layout, plus per-trial info for ``meta``."""
    spec = layout.specs[task]
    n = len(trials.ob)
    x = np.zeros((n, steps, layout.n_in), dtype=np.float32)
    y = np.zeros((n, steps), dtype=np.int64)
    mask = np.zeros((n, steps), dtype=np.float32)
    classes = np.asarray(spec.action_classes, dtype=np.int64)
    stim_cols = list(range(layout.slot_offsets[task], layout.slot_offsets[task] + len(spec.stimulus_obs)))
    lengths, starts, ends, targets = [], [], [], []
    below_zero = total = 0
    for k, (ob, gt, (r0, r1)) in enumerate(zip(trials.ob, trials.gt, trials.response)):
        t = min(len(ob), steps)  # longer trials are cropped at the end
        raw = np.zeros((t, layout.n_in), dtype=np.float32)
        if spec.fixation_obs is not None:
            raw[:, 0] = ob[:t, spec.fixation_obs]
        raw[:, stim_cols] = ob[:t, list(spec.stimulus_obs)]
        raw[:, layout.rule_offset + task] = 1.0
        below_zero += int((ob[:t] < 0).sum())  # of the environment's own observations
        total += ob[:t].size
        x[k, :t] = np.maximum(raw, 0.0)
        y[k, :t] = classes[gt[:t]]
        r0, r1 = min(r0, t), min(r1, t)
        if split == "train":
            mask[k, :t] = PRE_RESPONSE_WEIGHT
            mask[k, r0:r1] = RESPONSE_WEIGHT
        else:
            mask[k, r0:r1] = 1.0
        lengths.append(len(ob))
        starts.append(r0)
        ends.append(r1)
        targets.append(int(classes[gt[r0]]) if r1 > r0 else FIXATION_CLASS)
    target = torch.tensor(targets, dtype=torch.int64)
    split_data = TaskSplit(
        x=torch.from_numpy(x), y=torch.from_numpy(y), mask=torch.from_numpy(mask), labels_orig=target
    )
    info = {
        **_numeric_info(trials.info),
        "target": target,
        "length": torch.tensor(lengths, dtype=torch.int64),
        "response_start": torch.tensor(starts, dtype=torch.int64),
        "response_end": torch.tensor(ends, dtype=torch.int64),
    }
    stats = {"cropped": int(sum(L > steps for L in lengths)), "clipped_fraction": below_zero / max(total, 1)}
    return split_data, {"trials": info, **stats}


# ---------------------------------------------------------------------------- protocols
def _task_names(proto, layout: Layout) -> list[str]:
    """Given names, else the environment's (with the task index when an environment repeats)."""
    envs = [s.env_id.removesuffix("-v0").rpartition(":")[2] for s in layout.specs]
    return [t.name or (e if envs.count(e) == 1 else f"{e}-{i}") for i, (t, e) in enumerate(zip(proto.tasks, envs))]


def protocol_specs(proto) -> list[EnvSpec]:
    """Every task's :class:`EnvSpec`; raises :class:`DataError` on the first bad task."""
    specs = []
    for i, t in enumerate(proto.tasks):
        if not getattr(t, "env", None):
            raise DataError(f"task {i} names no NeuroGym env (set tasks.{i}.env)")
        specs.append(env_spec(t.env, t.env_kwargs))
    return specs


def protocol_layout(proto) -> Layout:
    return make_layout(protocol_specs(proto))


def cognitive_problems(proto, model_cfg) -> list[tuple[tuple, str, str]]:
    """(location, key, message) for every problem of a cognitive protocol (check_protocol's part)."""
    problems: list[tuple[tuple, str, str]] = []
    specs: list[EnvSpec | None] = []
    from .transforms import TASK_TRANSFORMS

    image_only = ("classes", "relabel", *TASK_TRANSFORMS)
    for i, t in enumerate(proto.tasks):
        for key in image_only:
            if getattr(t, key, None) is not None:
                problems.append((("tasks", i, key), f"tasks.{i}.{key}", "is for image datasets; cognitive tasks take env and env_kwargs"))
        if not getattr(t, "env", None):
            problems.append((("tasks", i), f"tasks.{i}.env", "a cognitive task needs a NeuroGym env (e.g. PerceptualDecisionMaking)"))
            specs.append(None)
            continue
        try:
            env_id(t.env)
        except DataError as err:
            problems.append((("tasks", i, "env"), f"tasks.{i}.env", str(err)))
            specs.append(None)
            continue
        try:
            specs.append(env_spec(t.env, t.env_kwargs))
        except DataError as err:  # the environment exists: its kwargs (or its spaces) are the problem
            loc = ("tasks", i, "env_kwargs") if t.env_kwargs is not None else ("tasks", i, "env")
            problems.append((loc, ".".join(map(str, loc)), str(err)))
            specs.append(None)
            continue
        problems += _timing_problems(i, t.env, t.env_kwargs or {})
    good = [s for s in specs if s is not None]
    dts = sorted({s.dt for s in good})
    if len(dts) > 1:
        problems.append((("tasks",), "tasks", f"all cognitive tasks must share one time step (env_kwargs.dt), got {dts} ms"))
    model_dt = getattr(model_cfg, "dt", None)
    if len(dts) == 1 and model_dt is not None and model_dt != dts[0]:
        problems.append((("model",), "model.dt", f"the model steps {model_dt:g} ms but the tasks' time step is {dts[0]:g} ms "
                         f"(env_kwargs.dt): set model.dt: {dts[0]:g}"))
    if problems or not good:
        return problems
    layout = make_layout(good)
    n_in, n_out = getattr(model_cfg, "n_in", None), getattr(model_cfg, "n_out", None)
    if n_in is not None and n_in != layout.n_in:
        problems.append((("model",), "model.n_in", f"the model takes {n_in} inputs but these tasks' layout has {layout.n_in} "
                         f"(fixation 1 + stimulus inputs {layout.rule_offset - 1} + rule inputs {len(good)}; set model.n_in: {layout.n_in})"))
    if n_out is not None and n_out < layout.n_out:
        problems.append((("model",), "model.n_out", f"the model has {n_out} outputs but these tasks need {layout.n_out} (fixate + responses)"))
    if getattr(model_cfg, "output", "all") != "all":
        problems.append((("model",), "model.output", "cognitive tasks have a target per step: set model.output: all"))
    return problems


def _timing_problems(i: int, env: str, kwargs: Mapping[str, Any]) -> list[tuple[tuple, str, str]]:
    """Timing periods the environment does not have, and negative durations: NeuroGym accepts
    both silently (a negative period makes trials of the wrong length)."""
    timing = kwargs.get("timing")
    if not isinstance(timing, Mapping):
        return []
    eid = env_id(env)
    periods = set(make_env(eid, {k: v for k, v in kwargs.items() if k != "timing"}).timing)
    out = []
    for period, value in timing.items():
        loc = ("tasks", i, "env_kwargs", "timing", period)
        key = f"tasks.{i}.env_kwargs.timing.{period}"
        if period not in periods:
            out.append((loc, key, f"{eid} has no period '{period}' (its periods: {', '.join(sorted(periods))})"))
        numbers = [value] if isinstance(value, (int, float)) else [v for v in value if isinstance(v, (int, float))] \
            if isinstance(value, (list, tuple)) else []
        if any(not isinstance(v, bool) and v < 0 for v in numbers):
            out.append((loc, key, f"a duration cannot be negative (got {value})"))
    return out


def cognitive_output_classes(proto) -> list[list[int]]:
    layout = protocol_layout(proto)
    return [layout.classes(i) for i in range(len(layout.specs))]


def build_cognitive_tasks(proto) -> tuple[list[Task], str]:
    """The protocol's task sequence and a one-line description of the data."""
    ngym = _neurogym()
    ds = proto.dataset
    layout = protocol_layout(proto)
    n_train = ds.max_train or DEFAULT_TRAIN_TRIALS
    n_test = ds.max_test or DEFAULT_TEST_TRIALS
    seeds = [{split: trial_seed(proto.seed, ds.subset_seed, i, split) for split in ("train", "test")}
             for i in range(len(layout.specs))]
    raw = []  # every task's trials first: the common length T depends on all of them
    for spec, seed in zip(layout.specs, seeds):
        env = make_env(spec.env_id, spec.kwargs)
        raw.append({"train": generate_trials(env, n_train, seed["train"]),
                    "test": generate_trials(env, n_test, seed["test"])})
    steps = getattr(ds, "steps", None) or max(len(ob) for r in raw for trials in r.values() for ob in trials.ob)
    tasks = []
    for i, (name, spec) in enumerate(zip(_task_names(proto, layout), layout.specs)):
        splits, meta = {}, {}
        for split, trials in raw[i].items():
            splits[split], m = encode_trials(trials, layout, i, steps, split)
            meta[split] = {**m, "seed": seeds[i][split], "n": len(trials.ob)}
        tasks.append(Task(
            name=name, classes=layout.classes(i), train=splits["train"], test=splits["test"],
            meta={
                "dataset": "cognitive", "source": f"neurogym {ngym.__version__}", "env": spec.env_id,
                "env_kwargs": spec.kwargs, "dt": spec.dt, "steps": steps, "task_index": i,
                "obs_names": spec.obs_names, "action_names": spec.action_names,
                "action_classes": list(spec.action_classes), "layout": layout.describe(),
                "rule_input": layout.rule_offset + i,
                "mask_weights": {"train": {"pre_response": PRE_RESPONSE_WEIGHT, "response": RESPONSE_WEIGHT},
                                 "test": {"response": 1.0}},
                "n_train": n_train, "n_test": n_test,
                "train_trials": meta["train"].pop("trials"), "test_trials": meta["test"].pop("trials"),
                "splits": meta,
            },
        ))
    desc = (f"neurogym {ngym.__version__}: " + ", ".join(s.env_id for s in layout.specs)
            + f"; {n_train} train / {n_test} test trials per task, dt {layout.specs[0].dt:g} ms, {steps} steps")
    return tasks, desc
