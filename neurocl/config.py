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
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class Strict(BaseModel):
    """Base of every configuration schema: unknown keys are errors, assignments are validated,
    numbers are finite (``.inf``, ``1e400`` and ``.nan`` are errors) and never a true/false."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        # pydantic reads `grad_clip: true` as 1.0; a yes/no where a number belongs is a mistake.
        # Passed on as the word, the field's own check then reports it at its key.
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                key = field.alias if field.alias in data else name
                if isinstance(data.get(key), bool) and _wants_number(field.annotation):
                    data = {**data, key: str(data[key]).lower()}
        return data


def _wants_number(annotation: Any) -> bool:
    """A field that takes an int or a float and no bool."""
    from typing import get_args

    todo, found = [annotation], set()
    while todo:
        t = todo.pop()
        if t in (int, float, bool):
            found.add(t)
        todo += list(get_args(t))
    return bool(found & {int, float}) and bool not in found


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


# Bounds on what a configuration file may be: protocols, presets and sweeps are a few kB; these
# stop a hostile or broken file (an alias bomb, a file pasted into itself) from hanging a run.
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_VALUES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _Walk:
    """YAML nodes to plain data, with the position of every key; safe and bounded."""

    def __init__(self, source: str):
        self.source = source
        self.loader = yaml.SafeLoader("")
        self.values = 0
        self.positions: dict[tuple, Position] = {(): Position(1, 1)}

    def fail(self, node: yaml.Node, problem: str) -> ConfigError:
        mark = node.start_mark
        return ConfigError([f"{self.source}:{mark.line + 1}:{mark.column + 1}: {problem}"])

    def scalar(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as err:  # an unknown tag (!!python/object, !include, ...)
            raise self.fail(node, f"{getattr(err, 'problem', err)} (only plain YAML values are read)") from None

    def walk(self, node: yaml.Node, path: tuple) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise self.fail(node, f"the file expands to more than {MAX_VALUES} values (aliases repeating "
                                  "an anchor many times?); write it out or make it smaller")
        if len(path) > MAX_DEPTH:
            raise self.fail(node, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
            raise self.fail(node, f"unknown tag {node.tag} (only plain YAML values are read)")
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                self.positions[path + (i,)] = Position(item.start_mark.line + 1, item.start_mark.column + 1)
                out.append(self.walk(item, path + (i,)))
            return out
        return self.scalar(node)

    def mapping(self, node: yaml.MappingNode, path: tuple) -> dict:
        out: dict = {}
        seen: dict = {}
        merged: list[dict] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *defaults`: the anchor's keys, unless given here
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    block = self.walk(src, path)
                    if not isinstance(block, dict):
                        raise self.fail(src, "a merge key (<<) takes a mapping or a list of mappings")
                    merged.append(block)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, "a key must be a name or a number, not a list or a mapping")
            key = self.scalar(key_node)
            if key in seen:
                raise self.fail(key_node, f"key '{key}' appears twice in this mapping (first on line {seen[key]}); "
                                          "keep one")
            seen[key] = key_node.start_mark.line + 1
            self.positions[path + (key,)] = Position(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.walk(value_node, path + (key,))
        for block in merged:
            for key, value in block.items():
                out.setdefault(key, value)
        return out


def load_yaml(path: str | Path) -> Located:
    """Read a YAML file, keeping the line and column of every key.

    Safe (plain values only) and bounded (size, depth, alias expansion); YAML merge keys work;
    a key given twice in one mapping is an error. Every problem is a ConfigError naming the file
    (and the line, where there is one), never a traceback.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError([f"{path}: {size} bytes; configuration files over {MAX_BYTES} bytes are not read"])
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError([f"{path}: cannot read it ({err.strerror or err})"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError([f"{path}:{line}:{column}: not UTF-8 text (byte 0x{raw[err.start]:02x}); "
                           "save the file as UTF-8"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {getattr(err, 'problem', err)}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: nested more than {MAX_DEPTH} levels deep"]) from None
    walker = _Walk(str(path))
    try:
        data = walker.walk(node, ()) if node is not None else {}
    except RecursionError:
        raise ConfigError([f"{path}: nested more than {MAX_DEPTH} levels deep"]) from None
    return Located(data, walker.positions, str(path))


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
                if sub is not None and not isinstance(sub, (dict, list)):
                    tags.append(p)  # a union member's name after a plain value (p_connect.constrained-float)
                    continue
            clean.append(p)
        loc = tuple(clean)
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
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
