"""Experience replay: reservoir sampling, budgets, batch mixing, checkpoints and a benchmark."""

import json

import numpy as np
import pytest
import torch
from scipy import stats

from neurocl.data import Task, TaskSplit
from neurocl.rules.base import Batch, Context
from neurocl.rules.replay import ExampleMemory, Replay, ReplayConfig, append_replayed, reservoir_slots
from neurocl.run import Runner, run_protocol


def split_digits(rules, seed=0, **extra):
    """Split 8x8 digits, class-incremental, a small MLP: fast enough for tests."""
    proto = dict(
        name="split-digits-test", dataset={"name": "digits", "encoding": "flat"}, scenario="class-incremental",
        tasks=[{"classes": [2 * i, 2 * i + 1]} for i in range(5)],
        training={"epochs": 10, "batch_size": 16, "optimizer": {"name": "adam", "lr": 2e-3}},
        seed=seed, model={"kind": "mlp", "n_in": 64, "hidden": [100], "n_out": 10}, rules=rules,
        evaluation={"every": "task", "untrained": False}, execution={"progress": "none"},
        recording={"weight_stats": False},
    )
    proto.update(extra)
    return proto


def final_accuracy(rd) -> float:
    return json.loads(rd.summary.read_text())["final_average_accuracy"]


def _items(ids):
    ids = torch.as_tensor(ids, dtype=torch.long)
    return ids.float()[:, None, None], ids % 10, torch.zeros_like(ids)


# ---------------------------------------------------------------------------- reservoir
def _inclusion_counts(memory_factory, stream_sizes, trials, seed=0):
    gen = torch.Generator().manual_seed(seed)
    counts = np.zeros(sum(stream_sizes))
    for _ in range(trials):
        memory = memory_factory()
        start = 0
        for size in stream_sizes:  # the stream arrives in chunks, like tasks
            x, y, task = _items(range(start, start + size))
            memory.add(x, y, task, None, gen)
            start += size
        kept = memory.flat()["x"].flatten().long()
        counts[kept.numpy()] += 1
    return counts


def test_reservoir_sampling_keeps_every_item_with_equal_probability():
    stream = [17, 5, 28]  # 50 items in three uneven chunks
    counts = _inclusion_counts(lambda: ExampleMemory(10, "total", "reservoir"), stream, trials=1500)
    assert counts.sum() == 1500 * 10
    # Chi-square goodness of fit of the inclusion counts to the uniform 10/50 per item.
    p = stats.chisquare(counts).pvalue
    assert p > 1e-3, f"inclusion counts are not uniform (p = {p:.2g})"


def test_the_chi_square_check_detects_a_biased_memory():
    # A memory that keeps the most recent items: the same test must reject it.
    class LastItems(ExampleMemory):
        def add(self, x, y, task, mask, generator=None):
            old = self.flat()["x"] if len(self) else x[:0]
            keep = torch.cat([old, x])[-self.memory:]
            super().__init__(self.memory, self.budget, self.selection)
            super().add(keep, keep.flatten().long() % 10, torch.zeros(len(keep), dtype=torch.long), None, generator)

    counts = _inclusion_counts(lambda: LastItems(10, "total", "reservoir"), [17, 5, 28], trials=200)
    assert stats.chisquare(counts).pvalue < 1e-6


def test_reservoir_slots_fill_then_replace():
    slots = reservoir_slots(0, 5, capacity=8)
    assert slots.tolist() == [0, 1, 2, 3, 4]  # not full yet: every item is kept in order
    gen = torch.Generator().manual_seed(1)
    late = reservoir_slots(10_000, 20_000, capacity=8, generator=gen)
    kept = (late >= 0).float().mean().item()
    assert 0 < kept < 0.01  # capacity / (t + 1) is tiny this late in the stream
    assert late.max() < 8


# ---------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("budget", ["total", "per-class"])
@pytest.mark.parametrize("selection", ["reservoir", "class-balanced"])
def test_the_memory_never_exceeds_its_budget(budget, selection):
    gen = torch.Generator().manual_seed(0)
    memory = ExampleMemory(12, budget, selection)
    rng = np.random.default_rng(0)
    classes_seen = set()
    for task, classes in enumerate([(0, 1), (2, 3), (4, 5, 6), (7,)]):
        n = int(rng.integers(5, 60))
        y = torch.as_tensor(rng.choice(classes, n))
        x = torch.rand(n, 3, 2)
        memory.add(x, y, torch.full((n,), task), None, gen)
        classes_seen |= set(int(c) for c in y)
        sizes = [len(p) for p in memory.pools.values()]
        if budget == "total":
            assert len(memory) <= 12
        else:
            assert max(sizes) <= 12 and len(memory) <= 12 * len(classes_seen)
        assert all(len(p) <= p.capacity for p in memory.pools.values())


def test_class_balanced_selection_splits_the_budget_evenly():
    gen = torch.Generator().manual_seed(0)
    memory = ExampleMemory(20, "total", "class-balanced")
    # Unbalanced data: 100 of class 0, 10 of class 1, then a second task with classes 2 and 3.
    y = torch.tensor([0] * 100 + [1] * 10)
    memory.add(torch.rand(110, 1, 4), y, torch.zeros(110, dtype=torch.long), None, gen)
    assert sorted(len(p) for p in memory.pools.values()) == [10, 10]
    y2 = torch.tensor([2] * 50 + [3] * 50)
    memory.add(torch.rand(100, 1, 4), y2, torch.ones(100, dtype=torch.long), None, gen)
    assert sorted(len(p) for p in memory.pools.values()) == [5, 5, 5, 5]
    # A plain reservoir keeps classes in proportion to their data instead.
    plain = ExampleMemory(20, "total", "reservoir")
    plain.add(torch.rand(110, 1, 4), y, torch.zeros(110, dtype=torch.long), None, gen)
    assert (plain.flat()["y"] == 0).sum() > 12


# ---------------------------------------------------------------------------- mixing
def _ctx(tasks, task_index=1):
    return Context(
        model=None, optimizer=None, tasks=tasks, protocol=None, loss_fn=None,
        class_mask=torch.ones(len(tasks), 4, dtype=torch.bool), log_metric=lambda *a, **k: None,
        generator=torch.Generator().manual_seed(0), task_index=task_index,
    )


def _sequence_task(name, task_id, n=30, steps=6):
    """A task with per-step targets and step masks, like a cognitive task."""
    x = torch.rand(n, steps, 3) + task_id
    y = torch.randint(0, 4, (n, steps))
    mask = (torch.rand(n, steps) > 0.3).float()
    split = TaskSplit(x=x, y=y, mask=mask)
    return Task(name, [0, 1, 2, 3], split, split)


def test_replayed_rows_keep_their_task_targets_and_step_masks():
    tasks = [_sequence_task("a", 0), _sequence_task("b", 1)]
    rule = Replay(ReplayConfig(memory=8, real_weight=0.25))
    ctx = _ctx(tasks)
    rule.end_task(0, ctx)
    real = tasks[1].train.subset(slice(0, 4))
    batch = Batch(x=real.x, y=real.y, task=torch.ones(4, dtype=torch.long), mask=real.mask)
    mixed = rule.mix_batch(batch, ctx)
    assert len(mixed) == 8  # as many replayed rows as real ones by default
    replayed = slice(4, 8)
    assert torch.all(mixed.task[replayed] == 0)
    # Every replayed row is a stored example of task 0, with its own targets and step mask.
    old = tasks[0].train
    for row in range(4, 8):
        match = [i for i in range(len(old)) if torch.equal(old.x[i], mixed.x[row])]
        assert len(match) == 1
        assert torch.equal(mixed.y[row], old.y[match[0]]) and torch.equal(mixed.mask[row], old.mask[match[0]])
    # r * real + (1 - r) * replayed.
    w = mixed.weights()
    assert w[:4].sum().item() == pytest.approx(0.25) and w[4:].sum().item() == pytest.approx(0.75)


def test_append_mixing_weighs_every_row_the_same_and_fills_in_masks():
    batch = Batch(x=torch.rand(3, 5, 2), y=torch.zeros(3, dtype=torch.long), task=torch.zeros(3, dtype=torch.long))
    mixed = append_replayed(batch, torch.rand(2, 5, 2), torch.ones(2, dtype=torch.long), torch.ones(2, dtype=torch.long),
                            mask=torch.ones(2, 5))
    assert torch.allclose(mixed.weights(), torch.full((5,), 0.2))
    # The real rows had no mask ("last step only"): it is spelt out next to the replayed masks.
    assert mixed.mask[:3].tolist() == [[0, 0, 0, 0, 1]] * 3 and mixed.mask[3:].sum() == 10


def test_task_weighting_gives_each_task_seen_an_equal_share():
    rule = Replay(ReplayConfig(real_weight="tasks"))
    assert rule.real_weight(_ctx([None] * 4, task_index=3)) == pytest.approx(0.25)


# ---------------------------------------------------------------------------- checkpoints
def test_memory_state_survives_a_weights_only_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(0)
    memory = ExampleMemory(6, "total", "class-balanced")
    memory.add(torch.rand(40, 2, 3), torch.randint(0, 3, (40,)), torch.zeros(40, dtype=torch.long), torch.ones(40, 2), gen)
    torch.save(memory.state_dict(), tmp_path / "m.pt")
    restored = ExampleMemory(6, "total", "class-balanced")
    restored.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    for name in ("x", "y", "task", "mask"):
        assert torch.equal(memory.flat()[name], restored.flat()[name])
    assert [p.seen for p in restored.pools.values()] == [p.seen for p in memory.pools.values()]


def test_a_resumed_replay_run_ends_exactly_like_an_uninterrupted_one(tmp_path, monkeypatch):
    proto = split_digits([{"name": "replay", "memory": 60}])
    proto["training"]["epochs"] = 2
    full = run_protocol(proto, out=tmp_path / "a")

    original = Runner.save_checkpoint

    def crash_after_task_2(self, task, global_epoch):
        original(self, task, global_epoch)
        if task == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "save_checkpoint", crash_after_task_2)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(proto, out=tmp_path / "b")
    monkeypatch.setattr(Runner, "save_checkpoint", original)
    resumed = run_protocol(proto, out=tmp_path / "b")
    a = json.loads(full.summary.read_text())["accuracy_matrix"]
    b = json.loads(resumed.summary.read_text())["accuracy_matrix"]
    assert a == b


# ---------------------------------------------------------------------------- benchmark
def test_experience_replay_beats_naive_fine_tuning_on_split_digits(tmp_path):
    naive = final_accuracy(run_protocol(split_digits(["naive"]), out=tmp_path))
    replay = final_accuracy(run_protocol(split_digits([{"name": "replay", "memory": 100}]), out=tmp_path))
    # Measured at seed 0: naive 0.19 (it keeps only the last task), replay 0.88.
    assert replay - naive > 0.4, (naive, replay)
