"""Model presets, the model registry, and saving/loading models with their constraints."""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from .config import ConfigError, load_yaml, validate
from .nets.base import MODEL_KINDS, Model


def register_model(kind: str, config_cls: type[BaseModel], model_cls: type[Model]) -> None:
    """Add a model kind (the same as ``MODEL_KINDS.register((config_cls, model_cls), name=kind)``)."""
    MODEL_KINDS.register((config_cls, model_cls), name=kind)


def preset_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("NEUROCL_MODELS", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parent.parent / "models")
    return dirs


def preset_names() -> list[str]:
    names = set()
    for d in preset_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_preset(name: str) -> Path:
    for d in preset_dirs():
        path = d / f"{name}.yaml"
        if path.is_file():
            return path
    close = difflib.get_close_matches(name, preset_names(), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (available: {', '.join(preset_names())})"
    raise ConfigError([f"model preset '{name}' not found{hint}"])


def model_config_class(kind: Any) -> type[BaseModel]:
    if kind not in MODEL_KINDS:
        raise ConfigError([MODEL_KINDS.unknown(kind)])
    return MODEL_KINDS[kind][0]


def resolve_model_config(spec: Any, overrides: dict | None = None, source: str = "model") -> BaseModel:
    """A preset name, a YAML path, a dict or a config object -> a validated config.

    A dict may name a preset under ``preset`` and override some of its keys.
    """
    located = None
    if isinstance(spec, BaseModel):
        data = spec.model_dump()
    elif isinstance(spec, (str, Path)):
        path = Path(spec)
        if not (str(spec).endswith((".yaml", ".yml")) or path.is_file()):
            path = find_preset(str(spec))
        located = load_yaml(path)
        data = copy.deepcopy(located.data)
    elif isinstance(spec, dict):
        data = copy.deepcopy(spec)
        if "preset" in data:
            base = resolve_model_config(data.pop("preset")).model_dump()
            base.update(data)
            data = base
    else:
        raise ConfigError([f"{source}: expected a preset name, a YAML path or a mapping, got {type(spec).__name__}"])
    if overrides:
        data.update(overrides)
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: a model must be a mapping"])
    cls = model_config_class(data.get("kind", "ei-rnn"))
    return validate(cls, data, located, source)


def expand_model_spec(spec: Any, source: str = "model") -> dict:
    """What a protocol's ``model`` stands for, as a mapping with its ``kind``: a preset name or
    YAML path (validated here, so that its errors name the preset's file and line), a mapping
    that may name a ``preset`` and override some of its keys, or a config object. The protocol
    then validates the mapping against its kind (its errors name the protocol's lines)."""
    if isinstance(spec, BaseModel):
        return spec.model_dump()
    if isinstance(spec, (str, Path)):
        return resolve_model_config(spec, source=source).model_dump()
    if not isinstance(spec, dict):
        raise ConfigError([f"expected a preset name, a YAML path or a mapping, got {type(spec).__name__}"])
    data = copy.deepcopy(spec)
    if "preset" in data:
        base = resolve_model_config(data.pop("preset"), source=source).model_dump()
        base.update(data)
        data = base
    data.setdefault("kind", "ei-rnn")
    return data


def training_bytes(cfg: BaseModel) -> int | None:
    """About how much memory training ``cfg`` takes for its tensors of weight size (the weights,
    their masks, gradients and the optimiser's two moments), before building it; None for a
    kind this does not know."""
    kind = getattr(cfg, "kind", None)
    if kind == "ei-rnn":  # W_rec with its plastic mask, fixed part and connectivity, W_in, W_out
        count = 4 * cfg.n * cfg.n + cfg.n * (cfg.n_in + cfg.n_out)
    elif kind in ("mlp", "masked-mlp"):
        sizes = [cfg.n_in, *cfg.hidden, cfg.n_out]
        count = sum(a * b for a, b in zip(sizes, sizes[1:])) * (2 if kind == "masked-mlp" else 1)
    elif kind == "lstm":
        count = cfg.n_in * cfg.n_embed + 4 * cfg.hidden * (cfg.n_embed + cfg.hidden) + cfg.hidden * cfg.n_out
    else:
        return None
    itemsize = 8 if getattr(cfg, "dtype", "float32") == "float64" else 4
    return 4 * count * itemsize  # weights, gradients, Adam's m and v


def build_model(spec: Any = "ei-rnn-64", seed: int = 0, **overrides) -> Model:
    """Build a model from a preset name (``models/NAME.yaml``), a YAML path, a dict or a config."""
    cfg = resolve_model_config(spec, overrides or None)
    return MODEL_KINDS[cfg.kind][1](cfg, seed=seed)


def save_model(model: Model, path: str | Path) -> None:
    """Save config, seed and every tensor (masks and fixed synapses included)."""
    from .store import atomic_torch_save

    atomic_torch_save({"config": model.config.model_dump(mode="json"), "seed": model.seed, "state": model.state_dict()}, path)


def load_model(path: str | Path, task: int | None = None) -> Model:
    """A model from what neurocl stores.

    ``path``: a file written by :func:`save_model`; a stored run's directory (the network after
    its last stored task boundary, or after ``task``); or one of a run's checkpoints
    (``<run>/checkpoints/task-002.pt``, whose configuration is the run's ``config.json``).
    FileNotFoundError or ValueError, naming the file, for anything else.
    """
    import json

    from .store import RunDir

    path = Path(path)
    if path.is_dir():
        rd = RunDir(path)
        if not rd.config.is_file():
            raise ValueError(f"{path} is a directory but not a stored run (no {rd.config.name}); give a run "
                             f"directory (OUT/runs/<id>), one of its checkpoints or a file of save_model")
        if task is None:
            last = rd.last_checkpoint()
            if last is None:
                raise FileNotFoundError(f"{rd.checkpoints} holds no checkpoint: the run has not finished a task")
            ckpt = last[1]
        else:
            ckpt = rd.checkpoint(task)
            if not ckpt.is_file():
                kept = sorted(p.name for p in rd.checkpoints.glob("task-*.pt")) if rd.checkpoints.is_dir() else []
                raise FileNotFoundError(
                    f"{ckpt} is missing (this run kept {', '.join(kept) or 'none'}). Runs keep every task "
                    f"boundary with execution.keep_checkpoints: all; for this finished run, train its "
                    f"configuration again into another store (same id, same seed):\n"
                    f"  neurocl run {rd.config} execution.keep_checkpoints=all --out OTHER_STORE")
        return load_model(ckpt)
    if task is not None:
        raise ValueError(f"task={task} needs a run directory, not the file {path}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict):
        raise ValueError(f"{path} is not a model file of neurocl")
    if "config" in blob and "state" in blob:  # save_model
        model = build_model(blob["config"], seed=blob["seed"])
        model.load_state_dict(blob["state"])
        return model
    run = RunDir(path.parent.parent)
    if "model" in blob and path.parent == run.checkpoints and run.config.is_file():
        config = json.loads(run.config.read_text())
        model = build_model(config["model"], seed=config["seed"])
        model.load_state_dict(blob["model"])
        return model
    raise ValueError(f"{path} is neither a file of save_model nor a run checkpoint beside its run's config.json "
                     f"(it holds {', '.join(sorted(map(str, blob)))})")
