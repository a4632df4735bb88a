"""Learning rules, one module per family, registered by name."""

from __future__ import annotations

import difflib
import importlib

from .base import Batch, Context, Rule, RuleConfig
from .baseline import Joint, Naive

RULES: dict[str, type[Rule]] = {}


def register(rule_cls: type[Rule]) -> type[Rule]:
    RULES[rule_cls.name] = rule_cls
    return rule_cls


for _cls in (Naive, Joint):
    register(_cls)

# Families in their own modules; each registers its rules on import.
_FAMILIES = ("consolidation", "magnitude", "replay", "generative_replay", "supermask")
for _mod in _FAMILIES:
    try:
        importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as err:  # a family not written yet
        if err.name != f"{__name__}.{_mod}":
            raise


def rule_class(name: str) -> type[Rule]:
    if name not in RULES:
        close = difflib.get_close_matches(name, RULES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(RULES))})"
        raise KeyError(f"unknown rule '{name}'{hint}")
    return RULES[name]


def build_rules(configs) -> list[Rule]:
    return [rule_class(c.name)(c) for c in configs]


__all__ = ["Batch", "Context", "Rule", "RuleConfig", "RULES", "register", "rule_class", "build_rules"]
