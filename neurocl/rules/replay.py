"""Experience replay: a fixed-budget memory of past examples mixed into every batch.

The memory is a set of *pools*, each a reservoir sample (Vitter's Algorithm R) of the
examples offered to it:

* ``budget: total, selection: reservoir``: one pool of ``memory`` examples, a uniform sample
  of every training example seen so far (so classes appear in proportion to their data).
* ``budget: total, selection: class-balanced``: one pool per class, the ``memory`` slots
  split as evenly as possible among the classes seen so far; when new classes arrive the
  old pools shrink by dropping a random subset (a random subset of a uniform sample is
  still a uniform sample).
* ``budget: per-class`` (either selection): one pool of ``memory`` examples per class.

A "class" is the pair (task, target), so that domain- and task-incremental tasks that reuse
an output keep their classes apart; tasks with per-step targets (cognitive tasks) have one
pool per task. The memory is filled at the end of each task from that task's training
split, each example offered once, so during task i it holds tasks 0..i-1. Every slot keeps
the example's input sequence, target(s), step mask and task id (task-incremental masking
of a replayed example uses its own task's classes).

Mixing (``mixing``): ``ratio`` weights the loss ``r * mean(real) + (1 - r) * mean(replayed)``
with ``r = real_weight`` (a number, or ``tasks`` for ``1 / (tasks seen)``, so every task
seen counts equally); ``append`` simply adds the replayed examples to the batch, every
example weighing the same. ``replay_batch_size`` replayed examples are drawn per batch
(default: as many as the real batch), without replacement while the memory is large enough.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from .base import RULES, Batch, Context, Rule, RuleConfig

# Pool key: (task, target); target -1 for single-pool memories and per-step targets.
PoolKey = tuple[int, int]
SINGLE_POOL: PoolKey = (-1, -1)


# ---------------------------------------------------------------------------- batches
def _step_mask(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A per-step mask, with the usual "last step only" default spelt out."""
    if mask is not None:
        return mask
    m = torch.zeros(x.shape[:2], dtype=torch.float32, device=x.device)
    m[:, -1] = 1.0
    return m


def append_replayed(
    batch: Batch,
    x: torch.Tensor,
    y: torch.Tensor,
    task: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    soft: torch.Tensor | None = None,
    real_weight: float | None = None,
) -> Batch:
    """``batch`` with replayed examples appended after the real ones.

    ``real_weight`` r: the real rows share r of the loss and the replayed rows 1 - r (each
    group's rows keep their relative weights); None weighs every row the same. ``soft``
    (M, C): soft targets for the replayed rows (distillation); real rows keep hard targets.
    The runner reads the first ``len(batch)`` rows as the real ones.
    """
    n, m = len(batch), x.shape[0]
    if m == 0:
        return batch
    device = batch.x.device
    x, y, task = x.to(device), y.to(device), task.to(device)
    if batch.mask is None and mask is None:
        new_mask = None
    else:
        new_mask = torch.cat([_step_mask(batch.mask, batch.x), _step_mask(mask, x).to(device)])
    if real_weight is None:
        weight = torch.full((n + m,), 1.0 / (n + m), dtype=torch.float32, device=device)
    else:
        real = batch.weights().to(torch.float32)
        weight = torch.cat([real_weight * real / real.sum(), torch.full((m,), (1.0 - real_weight) / m, device=device)])
    new_soft = new_valid = None
    if soft is not None or batch.soft is not None:
        c = (soft if soft is not None else batch.soft).shape[1]
        old_soft = batch.soft if batch.soft is not None else torch.zeros(n, c, device=device)
        old_valid = batch.soft_valid if batch.soft_valid is not None else torch.zeros(n, dtype=torch.bool, device=device)
        rep_soft = soft.to(device) if soft is not None else torch.zeros(m, c, device=device)
        new_soft = torch.cat([old_soft, rep_soft])
        new_valid = torch.cat([old_valid, torch.full((m,), soft is not None, dtype=torch.bool, device=device)])
    return batch.replace(
        x=torch.cat([batch.x, x]), y=torch.cat([batch.y, y]), task=torch.cat([batch.task, task]),
        mask=new_mask, weight=weight, soft=new_soft, soft_valid=new_valid,
    )


# ---------------------------------------------------------------------------- reservoir
def reservoir_slots(n_seen: int, n_new: int, capacity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Algorithm R: the slot (or -1) each of ``n_new`` offered items lands in.

    ``n_seen`` items were offered before. Item k (overall index t = n_seen + k) fills slot t
    while the reservoir is not full, then replaces a uniformly chosen slot with probability
    capacity / (t + 1). Later items overwrite earlier ones in the same slot.
    """
    u = torch.rand(n_new, generator=generator, dtype=torch.float64)
    t = torch.arange(n_seen, n_seen + n_new, dtype=torch.float64)
    j = torch.floor(u * (t + 1)).to(torch.long)
    slots = torch.where(t < capacity, t.to(torch.long), j)
    return torch.where(slots < capacity, slots, torch.full_like(slots, -1))


class Pool:
    """One reservoir: stored examples and how many were offered."""

    FIELDS = ("x", "y", "task", "mask")

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.seen = 0
        self.data: dict[str, torch.Tensor | None] = dict.fromkeys(self.FIELDS)

    def __len__(self) -> int:
        return 0 if self.data["x"] is None else self.data["x"].shape[0]

    def offer(self, items: dict[str, torch.Tensor | None], generator: torch.Generator | None) -> None:
        n_new = items["x"].shape[0]
        slots = reservoir_slots(self.seen, n_new, self.capacity, generator)
        self.seen += n_new
        # The last item written to a slot wins, as if they were offered one at a time.
        winner: dict[int, int] = {}
        for k, s in enumerate(slots.tolist()):
            if s >= 0:
                winner[s] = k
        if not winner:
            return
        size = max(len(self), max(winner) + 1)
        for name, new in items.items():
            if new is None:
                continue
            old = self.data[name]
            buf = new.new_zeros((size, *new.shape[1:]))
            if old is not None:
                buf[: old.shape[0]] = old
            idx = torch.tensor(list(winner), dtype=torch.long)
            buf[idx] = new[torch.tensor(list(winner.values()), dtype=torch.long)]
            self.data[name] = buf

    def shrink(self, capacity: int, generator: torch.Generator | None) -> None:
        """Keep a uniformly random ``capacity`` of the stored examples."""
        self.capacity = capacity
        if len(self) > capacity:
            keep = torch.randperm(len(self), generator=generator)[:capacity].sort().values
            self.data = {k: None if v is None else v[keep] for k, v in self.data.items()}


class ExampleMemory:
    """Pools of examples under one budget; see the module docstring for the policies."""

    def __init__(self, memory: int, budget: str, selection: str):
        self.memory = memory
        self.budget = budget
        self.selection = selection
        self.pools: dict[PoolKey, Pool] = {}
        self._flat: dict[str, torch.Tensor | None] | None = None

    def __len__(self) -> int:
        return sum(len(p) for p in self.pools.values())

    @property
    def per_class(self) -> bool:
        return self.budget == "per-class" or self.selection == "class-balanced"

    def _capacities(self, keys: list[PoolKey]) -> dict[PoolKey, int]:
        if self.budget == "per-class":
            return {k: self.memory for k in keys}
        base, extra = divmod(self.memory, len(keys))
        return {k: base + (1 if i < extra else 0) for i, k in enumerate(sorted(keys))}

    def add(self, x, y, task, mask, generator: torch.Generator | None = None) -> None:
        """Offer examples (x (N, T, n_in), y, task (N,), mask or None) to the memory."""
        if self.per_class:
            labels = y if y.dim() == 1 else torch.full_like(task, -1)
            keys = sorted({(int(t), int(c)) for t, c in zip(task.tolist(), labels.tolist())})
        else:
            labels, keys = None, [SINGLE_POOL]
        caps = self._capacities(sorted(set(self.pools) | set(keys)))
        for key, pool in self.pools.items():
            pool.shrink(caps[key], generator)
        for key in keys:
            if labels is None:
                sel = torch.arange(x.shape[0])
            else:
                sel = torch.nonzero((task == key[0]) & (labels == key[1])).flatten()
            pool = self.pools.setdefault(key, Pool(caps[key]))
            pool.offer({"x": x[sel], "y": y[sel], "task": task[sel], "mask": None if mask is None else mask[sel]}, generator)
        self._flat = None

    def flat(self) -> dict[str, torch.Tensor | None]:
        """Every stored example, pools concatenated in key order."""
        if self._flat is None:
            pools = [self.pools[k] for k in sorted(self.pools) if len(self.pools[k])]
            self._flat = {}
            for name in Pool.FIELDS:
                parts = [p.data[name] for p in pools]
                self._flat[name] = torch.cat(parts) if parts and all(v is not None for v in parts) else None
        return self._flat

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor | None]:
        """``n`` stored examples, without replacement while ``n`` <= the memory size."""
        flat = self.flat()
        size = len(self)
        if n <= size:
            idx = torch.randperm(size, generator=generator)[:n]
        else:
            idx = torch.randint(size, (n,), generator=generator)
        return {k: None if v is None else v[idx] for k, v in flat.items()}

    # The checkpoint holds tensors, numbers and lists only (loaded with weights_only=True).
    def state_dict(self) -> dict:
        return {
            "keys": [list(k) for k in self.pools],
            "capacity": [p.capacity for p in self.pools.values()],
            "seen": [p.seen for p in self.pools.values()],
            "data": [{k: v for k, v in p.data.items() if v is not None} for p in self.pools.values()],
        }

    def load_state_dict(self, state: dict) -> None:
        self.pools = {}
        for key, cap, seen, data in zip(state["keys"], state["capacity"], state["seen"], state["data"]):
            pool = Pool(int(cap))
            pool.seen = int(seen)
            pool.data = {k: data.get(k) for k in Pool.FIELDS}
            self.pools[(int(key[0]), int(key[1]))] = pool
        self._flat = None


# ---------------------------------------------------------------------------- rule
class ReplayConfig(RuleConfig):
    name: Literal["replay"] = "replay"
    memory: int = Field(500, ge=1, description="examples in the memory (total, or per class)")
    budget: Literal["total", "per-class"] = "total"
    selection: Literal["reservoir", "class-balanced"] = "reservoir"
    mixing: Literal["ratio", "append"] = "ratio"
    real_weight: Annotated[float, Field(ge=0, le=1)] | Literal["tasks"] = Field(
        0.5, description="share r of the loss from real examples; 'tasks': 1 / (tasks seen)"
    )
    replay_batch_size: int | None = Field(None, ge=1, description="replayed examples per batch (default: the batch size)")


@RULES.register
class Replay(Rule):
    """Experience replay from a fixed-budget memory (reservoir or class-balanced)."""

    name = "replay"
    config_class = ReplayConfig

    def __init__(self, config: ReplayConfig):
        super().__init__(config)
        self.memory = ExampleMemory(config.memory, config.budget, config.selection)

    def real_weight(self, ctx: Context) -> float | None:
        c = self.config
        if c.mixing == "append":
            return None
        if c.real_weight == "tasks":
            return 1.0 / (ctx.task_index + 1)
        return float(c.real_weight)

    def mix_batch(self, batch: Batch, ctx: Context) -> Batch:
        if len(self.memory) == 0:
            return batch
        n = self.config.replay_batch_size or len(batch)
        old = self.memory.sample(n, ctx.generator)
        return append_replayed(batch, old["x"], old["y"], old["task"], mask=old["mask"], real_weight=self.real_weight(ctx))

    def end_task(self, task_index: int, ctx: Context) -> None:
        split = ctx.tasks[task_index].train
        task = torch.full((len(split),), task_index, dtype=torch.long)
        self.memory.add(split.x, split.y, task, split.mask, ctx.generator)
        ctx.log_metric("replay_memory_size", len(self.memory), task=task_index)

    def state_dict(self) -> dict:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "memory" in state:
            self.memory.load_state_dict(state["memory"])
