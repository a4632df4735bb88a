"""Learning rules, one module per family, registered by name (``RULES``, in rules/base.py)."""

from __future__ import annotations

from .base import RULES, Batch, Context, Rule, RuleConfig


def register(rule_cls: type[Rule]) -> type[Rule]:
    """Add a rule class under its ``name`` (the same as ``@RULES.register``)."""
    return RULES.register(rule_cls)


def rule_class(name: str) -> type[Rule]:
    """The rule called ``name``; a KeyError with a did-you-mean if there is none."""
    return RULES.lookup(name)


def build_rules(configs) -> list[Rule]:
    return [rule_class(c.name)(c) for c in configs]


__all__ = ["Batch", "Context", "Rule", "RuleConfig", "RULES", "register", "rule_class", "build_rules"]
