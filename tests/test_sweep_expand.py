"""Sweep files: expansion (grid x zip x list x seeds), run ids, and errors that point at the file."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from click.testing import CliRunner

from neurocl.cli import main
from neurocl.config import ConfigError
from neurocl.protocol import load_protocol, protocol_run_id, resolved_config
from neurocl.sweep import load_sweep, time_minutes
from sweep_fixtures import TINY_PROTOCOL

REPO = Path(__file__).resolve().parent.parent

BASE = TINY_PROTOCOL


def write(tmp_path: Path, sweep: str, base: str = BASE) -> Path:
    (tmp_path / "protocols").mkdir(exist_ok=True)
    (tmp_path / "protocols" / "tiny.yaml").write_text(base)
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    p = tmp_path / "sweeps" / "s.yaml"
    p.write_text(sweep)
    return p


def errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    return err.value.messages


def test_grid_zip_list_seeds_expand_to_their_product(tmp_path):
    p = write(tmp_path, """\
protocol: ../protocols/tiny.yaml
set: {training.epochs: 2}
grid:
  training.optimizer.lr: [0.001, 0.01, 0.1]
  rules: [[naive], [joint]]
zip:
  training.batch_size: [16, 32]
  dataset.subset_seed: [5, 6]
list:
  - {}
  - {scenario: task-incremental}
seeds: 2
""")
    sw = load_sweep(p)
    assert sw.n_combinations == 3 * 2 * 2 * 2 * 2 == len(sw.runs)
    got = {
        (c["training"]["optimizer"]["lr"], c["rules"][0]["name"], c["training"]["batch_size"],
         c["dataset"]["subset_seed"], c["scenario"], c["seed"])
        for c in (r.config for r in sw.runs)
    }
    want = {
        (lr, rule, bs, ss, sc, seed)
        for lr, rule in itertools.product([0.001, 0.01, 0.1], ["naive", "joint"])
        for bs, ss in [(16, 5), (32, 6)]  # zipped: varied together, not crossed
        for sc in ["class-incremental", "task-incremental"]
        for seed in [0, 1]
    }
    assert got == want
    assert {r.config["training"]["epochs"] for r in sw.runs} == {2}  # `set` applies to every run
    assert len({r.id for r in sw.runs}) == len(sw.runs)


def test_run_id_is_the_one_neurocl_run_gives(tmp_path):
    p = write(tmp_path, "protocol: ../protocols/tiny.yaml\ngrid: {training.optimizer.lr: [0.01]}\nseeds: [7]\n")
    (run,) = load_sweep(p).runs
    proto = load_protocol(tmp_path / "protocols" / "tiny.yaml", ["training.optimizer.lr=0.01", "seed=7"])
    assert run.id == protocol_run_id(proto) and run.config == resolved_config(proto)


def test_duplicate_configurations_collapse_to_one_run(tmp_path):
    # All three resolve to the base protocol (seed 0 and 1 epoch are its values).
    p = write(tmp_path, """\
protocol: ../protocols/tiny.yaml
list:
  - {}
  - {seed: 0}
  - {training.epochs: 1, execution.threads: 3}
""")
    sw = load_sweep(p)
    assert sw.n_combinations == 3 and len(sw.runs) == 1
    assert len(sw.runs[0].labels) == 3


def test_zip_groups_are_crossed_with_each_other(tmp_path):
    p = write(tmp_path, """\
protocol: ../protocols/tiny.yaml
zip:
  - {training.batch_size: [16, 32], dataset.subset_seed: [1, 2]}
  - {training.optimizer.lr: [0.01, 0.02, 0.03]}
""")
    got = {(c["training"]["batch_size"], c["dataset"]["subset_seed"], c["training"]["optimizer"]["lr"])
           for c in (r.config for r in load_sweep(p).runs)}
    assert got == {(bs, ss, lr) for bs, ss in [(16, 1), (32, 2)] for lr in [0.01, 0.02, 0.03]}


def test_seed_count_and_list(tmp_path):
    p = write(tmp_path, "protocol: ../protocols/tiny.yaml\nseeds: 3\n")
    assert sorted(r.config["seed"] for r in load_sweep(p).runs) == [0, 1, 2]
    p = write(tmp_path, "protocol: ../protocols/tiny.yaml\nseeds: [4, 9]\n")
    assert sorted(r.config["seed"] for r in load_sweep(p).runs) == [4, 9]


def test_unknown_sweep_key_names_file_line_and_suggests(tmp_path):
    p = write(tmp_path, "protocol: ../protocols/tiny.yaml\ngird:\n  seed: [1, 2]\nslurm:\n  partitoin: gpu\n")
    assert sorted(errors(p)) == [
        f"{p}:2:1: gird: unknown key (did you mean 'grid'?)",
        f"{p}:5:3: slurm.partitoin: unknown key (did you mean 'partition'?)",
    ]


def test_override_of_a_key_the_protocol_lacks_names_the_override(tmp_path):
    p = write(tmp_path, """\
protocol: ../protocols/tiny.yaml
grid:
  training.optimizer.lr: [0.01, 0.02]
  training.optimizer.lrr: [0.01, 0.02]
""")
    # once, although four combinations hit it
    assert errors(p) == [
        f"{p}:4:3: grid 'training.optimizer.lrr': training.optimizer.lrr: unknown key (did you mean 'lr'?)"
    ]


def test_bad_values_are_blamed_on_the_sweep_key_with_the_value(tmp_path):
    p = write(tmp_path, """\
protocol: ../protocols/tiny.yaml
grid:
  training.optimizer.lr: [0.01, -1]
list:
  - {tasks.0.classes: [0, 11]}
  - {model.n_in: 8}
""")
    msgs = errors(p)
    assert f"{p}:3:3: grid 'training.optimizer.lr = -1': training.optimizer.lr: Input should be greater than 0" in msgs
    assert any(m.startswith(f"{p}:5:6: list 'tasks.0.classes = [0,11]': tasks.0.classes: classes [11] do not exist") for m in msgs)
    assert any(m.startswith(f"{p}:6:6: list 'model.n_in = 8': model.n_in: the model takes 8 inputs") for m in msgs)


def test_zip_lists_must_have_equal_length(tmp_path):
    p = write(tmp_path, "protocol: ../protocols/tiny.yaml\nzip:\n  seed: [1, 2]\n  training.epochs: [1]\n")
    (msg,) = errors(p)
    assert msg.startswith(f"{p}:2:1: zip:") and "same length" in msg and "seed: 2" in msg


def test_missing_protocol_is_reported_at_its_key(tmp_path):
    p = write(tmp_path, "name: x\nprotocol: ../protocols/nope.yaml\n")
    (msg,) = errors(p)
    assert msg.startswith(f"{p}:2:1: protocol: no such file:") and msg.endswith("nope.yaml")


def test_time_limits():
    assert time_minutes(90) == 90
    assert time_minutes("01:30:00") == 90
    assert time_minutes("1-00:00:00") == 1440
    assert time_minutes("00:00:30") == 1  # rounded up: SLURM counts whole minutes
    with pytest.raises(ValueError):
        time_minutes("soon")


def test_example_sweeps_expand():
    files = sorted((REPO / "sweeps").glob("*.yaml"))
    assert files
    for f in files:
        sw = load_sweep(f)
        assert sw.runs and len({r.id for r in sw.runs}) == len(sw.runs)


def test_a_suite_runs_the_union_of_its_included_sweeps(tmp_path):
    write(tmp_path, "protocol: ../protocols/tiny.yaml\ngrid: {training.optimizer.lr: [0.01, 0.02]}\n")
    (tmp_path / "sweeps" / "b.yaml").write_text("protocol: ../protocols/tiny.yaml\nseeds: [0, 1]\n")
    suite = tmp_path / "sweeps" / "all.yaml"
    suite.write_text("include: [s.yaml, b.yaml]\nlocal: {workers: 2}\n")
    parts = [load_sweep(tmp_path / "sweeps" / f) for f in ("s.yaml", "b.yaml")]
    sw = load_sweep(suite)
    assert sw.name == "all" and sw.spec.local.workers == 2
    assert sw.n_combinations == 4
    # seed 0 of b.yaml is the base protocol at its default lr: not a run of s.yaml's grid.
    assert [r.id for r in sw.runs] == list(dict.fromkeys(r.id for p in parts for r in p.runs))
    assert sw.runs[0].label.startswith("s: training.optimizer.lr=0.01")
    assert sw.manifest()["protocols"] == [str((tmp_path / "protocols" / "tiny.yaml").resolve())] * 2
    # A suite of a suite, and a run shared by two included files, counted once with both labels.
    (tmp_path / "sweeps" / "c.yaml").write_text("protocol: ../protocols/tiny.yaml\nset: {training.optimizer.lr: 0.01}\n")
    nested = tmp_path / "sweeps" / "nested.yaml"
    nested.write_text("include: [all.yaml, c.yaml]\n")
    sw2 = load_sweep(nested)
    shared = [r for r in sw2.runs if len(r.labels) == 2]
    assert len(sw2.runs) == len(sw.runs) and len(shared) == 1
    assert shared[0].labels == ["all: s: training.optimizer.lr=0.01", "c: (base)"]


def test_suite_errors_name_the_include(tmp_path):
    write(tmp_path, "protocol: ../protocols/tiny.yaml\n")
    suite = tmp_path / "sweeps" / "all.yaml"
    suite.write_text("include:\n  - s.yaml\n  - missing.yaml\n  - all.yaml\n")
    msgs = errors(suite)
    assert any(f"{suite}:3:" in m and "no such file" in m for m in msgs), msgs
    assert any(f"{suite}:4:" in m and "includes itself" in m for m in msgs), msgs
    suite.write_text("include: [s.yaml]\nseeds: 3\n")
    assert any("takes no seeds" in m for m in errors(suite))
    suite.write_text("name: nothing\n")
    assert any("needs 'protocol'" in m for m in errors(suite))
    # An error inside an included file names that file.
    (tmp_path / "sweeps" / "bad.yaml").write_text("protocol: ../protocols/tiny.yaml\ngrid: {training.epochz: [1]}\n")
    suite.write_text("include: [bad.yaml]\n")
    assert any(str(tmp_path / "sweeps" / "bad.yaml") in m for m in errors(suite))


def neurocl(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_dry_run_lists_runs_and_writes_nothing(tmp_path):
    p = write(tmp_path, "protocol: ../protocols/tiny.yaml\ngrid: {training.optimizer.lr: [0.01, 0.02]}\nseeds: 2\n")
    out = tmp_path / "store"
    res = neurocl("sweep", str(p), "--dry-run", "--out", str(out))
    assert res.exit_code == 0, res.stderr
    assert "4 combinations, 4 runs; done 0, failed 0, to run 4" in res.stdout
    ids = {r.id for r in load_sweep(p).runs}
    assert {line.split()[1] for line in res.stdout.splitlines()[1:]} == ids
    assert not out.exists()


def test_cli_reports_sweep_errors_without_traceback(tmp_path):
    p = write(tmp_path, "protocol: ../protocols/tiny.yaml\ngrid: {training.optimizer.lrr: [1]}\n")
    res = neurocl("sweep", "run", str(p), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert res.stderr.strip() == f"{p}:2:8: grid 'training.optimizer.lrr': training.optimizer.lrr: unknown key (did you mean 'lr'?)"
