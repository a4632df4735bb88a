"""Baselines: naive fine-tuning (the lower bound) and joint training (the upper bound)."""

from __future__ import annotations

from typing import Literal

from .base import RULES, Rule, RuleConfig


class NaiveConfig(RuleConfig):
    name: Literal["naive"] = "naive"


@RULES.register
class Naive(Rule):
    """Plain sequential training on each task in turn."""

    name = "naive"
    config_class = NaiveConfig


class JointConfig(RuleConfig):
    name: Literal["joint"] = "joint"


@RULES.register
class Joint(Rule):
    """Train on the union of every task seen so far (no forgetting by construction)."""

    name = "joint"
    config_class = JointConfig

    def task_data(self, task_index, ctx):
        return [(j, ctx.tasks[j].train) for j in range(task_index + 1)]
