"""``neurocl doctor``: the trainability report of a preset, a model file, a protocol or a run.

A source becomes one or more networks and a probe batch: a preset or model file is built with a
seed and driven by the synthetic probe; a protocol is built as its run would build it (its model,
its seed) and driven by its first task's test inputs when that data is here without a download;
a stored run is rebuilt at init from its stored configuration and seed, and read again from each
task-boundary checkpoint it kept, all on the same probe so that the reports differ only by the
weights.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from . import trainability as T


class DoctorError(ValueError):
    """SOURCE names nothing the report can read; the message says what was expected."""


def doctor(source: str | Path, probe_trials: int = T.PROBE_TRIALS, seed: int = 0) -> dict[str, Any]:
    """The trainability report of ``source``: a preset name, a model YAML, a protocol YAML or a
    run directory. For a run, ``{"source", "probe", "init": report, "tasks": [report, ...]}``;
    otherwise one report with ``source`` and ``probe`` added. ``seed`` builds presets and model
    files (protocols and runs use their own)."""
    from ..config import load_yaml
    from ..store import RunDir

    if probe_trials < 1:
        raise DoctorError(f"--probe-trials must be at least 1, got {probe_trials}")
    path = Path(source)
    if path.is_dir():
        if not RunDir.holds_run(path):
            raise DoctorError(f"{source}: a directory but not a run directory (it has no stored configuration); "
                              "give one run, OUT/runs/<id>")
        return _run(RunDir(path), probe_trials)
    if path.is_file() or str(source).endswith((".yaml", ".yml")):
        data = load_yaml(path).data
        if isinstance(data, dict) and {"tasks", "dataset", "model", "rules"} & set(data):
            return _protocol(path, probe_trials)
    return _single(source, _build(source, seed), None, probe_trials, "synthetic")


def _build(spec, seed: int, state: dict | None = None):
    from ..models import build_model

    model = build_model(spec, seed=seed)
    T.require_ei(model)  # before any data is loaded for it
    if state is not None:
        model.load_state_dict(state)
    return model


def _single(source, model, probe, probe_trials: int, probe_name: str) -> dict[str, Any]:
    u = T.synthetic_probe(model.config.n_in, probe_trials) if probe is None else probe
    return {"source": str(source), "probe": probe_name, **T.report(model, u)}


def _protocol(path: Path, probe_trials: int) -> dict[str, Any]:
    from ..protocol import load_protocol, resolved_config

    proto = load_protocol(path)
    model = _build(resolved_config(proto)["model"], proto.seed)
    probe, name = protocol_probe(proto, probe_trials)
    return _single(path, model, probe, probe_trials, name)


def protocol_probe(proto, probe_trials: int):
    """(inputs, description): up to ``probe_trials`` test inputs of the protocol's first task,
    or (None, why the synthetic probe is used instead) when the data is not here."""
    from ..data import DataError, DatasetNotFound, find_dataset
    from ..data.sequence import build_tasks

    ds = proto.dataset
    try:
        find_dataset(ds.name, root=ds.root)
    except DatasetNotFound:
        return None, f"synthetic (dataset {ds.name} is not here; `neurocl data fetch {ds.name}` gets it)"
    except DataError as err:
        return None, f"synthetic (dataset {ds.name}: {str(err).splitlines()[0]})"
    cap = lambda m: probe_trials if m is None else min(m, probe_trials)  # noqa: E731
    # Only as many trials as the probe needs; cognitive tasks share one input layout over the
    # whole sequence, so they keep every task, image tasks only the first.
    small = proto.model_copy(update={"dataset": ds.model_copy(update={"max_train": cap(ds.max_train),
                                                                      "max_test": cap(ds.max_test)})})
    if not ds.name.startswith("cognitive"):
        small = small.model_copy(update={"tasks": proto.tasks[:1]})
    try:
        tasks, _ = build_tasks(small)
    except (DataError, ImportError) as err:
        return None, f"synthetic (the first task's data could not be built: {err})"
    task = tasks[0]
    x = task.test.x[:probe_trials].double().numpy()
    return x, f"{len(x)} test inputs of task 0 ({task.name}) of {ds.name}"


def _run(rd, probe_trials: int) -> dict[str, Any]:
    import torch

    from ..config import ConfigError
    from ..protocol import protocol_from_data

    config = json.loads(rd.config.read_text())
    model_cfg, seed = config.get("model"), int(config.get("seed", 0))
    init = _build(model_cfg, seed)
    try:
        proto = protocol_from_data(copy.deepcopy(config), None, str(rd.config), check=False)
        probe, name = protocol_probe(proto, probe_trials)
    except ConfigError as err:  # a store of an older neurocl: the network still reads
        probe, name = None, f"synthetic (the stored configuration is not a protocol today: {err.messages[0]})"
    if probe is None:
        probe = T.synthetic_probe(init.config.n_in, probe_trials)
    tasks = []
    for path in sorted(rd.checkpoints.glob("task-*.pt")) if rd.checkpoints.is_dir() else []:
        state = torch.load(path, map_location="cpu", weights_only=True)
        tasks.append({"task": int(state["task"]), "checkpoint": path.name,
                      **T.report(_build(model_cfg, seed, state["model"]), probe)})
    return {"source": str(rd.path), "probe": name, "init": T.report(init, probe), "tasks": tasks}
