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


class Located:
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


def load_yaml(path: str | Path) -> Located:
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
    return Located(data, positions, str(path))


def _allowed_keys(model: type[BaseModel], loc: tuple, data: Any, tags: tuple = ()) -> list[str]:
    """Field names (and aliases) valid at ``loc`` inside ``model``, for did-you-mean hints.

    ``tags`` are the discriminator values pydantic put in the error's location (``'mlp'`` in
    ``model.mlp.tua``): they say which member of a union the data was checked against."""
    from typing import Annotated, get_args, get_origin

    def member(models: list, value: Any) -> Any:
        for m in models:
            for disc in ("kind", "name"):
                f = m.model_fields.get(disc)
                if f is not None and (f.default in tags or (isinstance(value, dict) and f.default == value.get(disc))):
                    return m
        return models[0]

    def resolve(t: Any, value: Any) -> Any:
        # Annotated, Optional and unions down to the model the value is checked against (a
        # list stays a list: the next part of the location indexes it).
        for _ in range(8):
            if isinstance(t, type) and issubclass(t, BaseModel):
                return t
            if get_origin(t) is Annotated:
                t = get_args(t)[0]
                continue
            if get_origin(t) in (list, tuple):
                return t
            models = [a for a in get_args(t) if isinstance(a, type) and issubclass(a, BaseModel)]
            if not models:
                return t
            t = member(models, value)
        return t

    current: Any = model
    value = data
    for part in loc[:-1]:
        current = resolve(current, value)
        if isinstance(part, int):
            args = get_args(current)
            current = args[0] if get_origin(current) in (list, tuple) and args else None
            value = value[part] if isinstance(value, list) and part < len(value) else None
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
            value = value.get(part) if isinstance(value, dict) else None
        else:
            return []
    current = resolve(current, value)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def format_validation_error(
    err: ValidationError, model: type[BaseModel], located: Located | None, data: Any, prefix: str = ""
) -> list[str]:
    """Turn a pydantic error into ``file:line:col: dotted.key: message`` lines."""
    messages = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # Drop discriminator tags pydantic inserts into union locations: a part of the path that
        # the data does not have (the last part may be a missing or unknown key, so it stays).
        clean, tags = [], []
        for i, p in enumerate(loc):
            if isinstance(p, str) and clean and (located is None or tuple(clean + [p]) not in located.positions):
                sub = data
                for q in clean:
                    sub = sub.get(q) if isinstance(sub, dict) else (sub[q] if isinstance(sub, list) and isinstance(q, int) and q < len(sub) else None)
                last = i == len(loc) - 1
                if isinstance(sub, dict) and p not in sub and (not last or e["type"] not in ("missing", "extra_forbidden")):
                    tags.append(p)
                    continue
            clean.append(p)
        loc = tuple(clean)
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"]
        if e["type"] == "union_tag_invalid":
            # An unknown model kind or rule name: say which, with a did-you-mean.
            field = str(e["ctx"]["discriminator"]).strip("'")
            expected = [t.strip().strip("'") for t in str(e["ctx"]["expected_tags"]).split(",")]
            close = difflib.get_close_matches(str(e["ctx"]["tag"]), expected, n=1)
            loc, key = loc + (field,), f"{key}.{field}"
            msg = f"unknown {field} '{e['ctx']['tag']}'" + (
                f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(expected)})")
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc, data, tuple(tags))
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


def validate(model: type[BaseModel], data: Any, located: Located | None = None, source: str = "") -> BaseModel:
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
