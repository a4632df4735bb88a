"""YAML configuration loading with positions, and validation errors that point at them.

Every user-facing file (model presets, protocols, sweeps) is validated by a pydantic model.
A researcher who misspells a key must see ``file:line:column: key: message`` with a
suggestion, for every error at once, before anything is written.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Base of every configuration schema: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


class ConfigError(ValueError):
    """One or more problems in a configuration file, each with its position."""

    def __init__(self, messages: list[str]):
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))


class _Located:
    """Parsed YAML plus a map from key paths to the position of each key (or item)."""

    def __init__(self, data: Any, positions: dict[tuple, Position], source: str):
        self.data = data
        self.positions = positions
        self.source = source

    def position(self, loc: Iterable) -> Position | None:
        loc = tuple(loc)
        # Walk up the path until a known position: errors inside a value point at its key.
        while loc:
            if loc in self.positions:
                return self.positions[loc]
            loc = loc[:-1]
        return self.positions.get(())


def _walk(node: yaml.Node, path: tuple, positions: dict) -> Any:
    loader = yaml.SafeLoader("")
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            positions[path + (key,)] = Position(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _walk(value_node, path + (key,), positions)
        return out
    if isinstance(node, yaml.SequenceNode):
        out = []
        for i, item in enumerate(node.value):
            positions[path + (i,)] = Position(item.start_mark.line + 1, item.start_mark.column + 1)
            out.append(_walk(item, path + (i,), positions))
        return out
    return loader.construct_object(node, deep=True)


def load_yaml(path: str | Path) -> _Located:
    """Read a YAML file, keeping the line and column of every key."""
    path = Path(path)
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {getattr(err, 'problem', err)}"]) from None
    positions: dict[tuple, Position] = {(): Position(1, 1)}
    data = _walk(node, (), positions) if node is not None else {}
    return _Located(data, positions, str(path))


def _allowed_keys(model: type[BaseModel], loc: tuple, data: Any) -> list[str]:
    """Field names (and aliases) valid at ``loc`` inside ``model``, for did-you-mean hints."""
    from typing import get_args, get_origin

    current: Any = model
    value = data
    for part in loc[:-1]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            value = None
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return []
            current = field.annotation
        # Unwrap Optional / list / Union until a BaseModel that matches the data.
        for _ in range(4):
            if isinstance(current, type) and issubclass(current, BaseModel):
                break
            args = [a for a in get_args(current) if a is not type(None)]
            if get_origin(current) in (list, tuple) and args:
                current = args[0]
                continue
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if not models:
                break
            current = models[0]
            if isinstance(value, dict) and len(models) > 1:
                for m in models:
                    kind = m.model_fields.get("kind")
                    if kind is not None and kind.default == value.get("kind"):
                        current = m
    if isinstance(current, type) and issubclass(current, BaseModel):
        names = []
        for name, f in current.model_fields.items():
            names.append(f.alias or name)
        return names
    return []


def format_validation_error(
    err: ValidationError, model: type[BaseModel], located: _Located | None, data: Any, prefix: str = ""
) -> list[str]:
    """Turn a pydantic error into ``file:line:col: dotted.key: message`` lines."""
    messages = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # Drop discriminator tags pydantic inserts into union locations.
        clean = []
        for p in loc:
            if isinstance(p, str) and located is not None and clean and tuple(clean + [p]) not in located.positions:
                sub = located.data
                for q in clean:
                    sub = sub.get(q) if isinstance(sub, dict) else (sub[q] if isinstance(sub, list) and isinstance(q, int) and q < len(sub) else None)
                if isinstance(sub, dict) and p not in sub and e["type"] != "missing" and e["type"] != "extra_forbidden":
                    continue
            clean.append(p)
        loc = tuple(clean)
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc, data)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
            msg = "unknown key"
            if close:
                msg += f" (did you mean '{close[0]}'?)"
            elif allowed:
                msg += f" (allowed: {', '.join(sorted(allowed))})"
        if located is not None:
            pos = located.position(loc)
            where = f"{located.source}:{pos.line}:{pos.column}" if pos else located.source
        else:
            where = prefix or "<config>"
        messages.append(f"{where}: {key}: {msg}")
    return messages


def validate(model: type[BaseModel], data: Any, located: _Located | None = None, source: str = "") -> BaseModel:
    """Validate ``data`` against ``model``; raise ConfigError listing every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, model, located, data, source)) from None


def load_config(model: type[BaseModel], path: str | Path) -> BaseModel:
    located = load_yaml(path)
    return validate(model, located.data, located)


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c = value`` inside nested dicts (lists indexed by integers)."""
    parts = dotted.split(".")
    cur: Any = data
    for i, part in enumerate(parts[:-1]):
        key: Any = int(part) if isinstance(cur, list) else part
        if isinstance(cur, dict):
            if key not in cur or not isinstance(cur[key], (dict, list)):
                cur[key] = {}
            cur = cur[key]
        elif isinstance(cur, list):
            if not (0 <= key < len(cur)):
                raise KeyError(f"index {key} out of range in '{'.'.join(parts[: i + 1])}'")
            cur = cur[key]
        else:
            raise KeyError(f"'{'.'.join(parts[:i])}' is not a mapping")
    last = parts[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``training.lr=3e-4`` -> ("training.lr", 3e-4); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError([f"override '{text}': expected KEY=VALUE"])
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError([f"override '{text}': empty key"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError([f"override '{text}': value is not valid YAML: {err}"]) from None
    return key, value
