"""Stable run ids: only values that differ from the defaults are hashed, and stores written by
an older neurocl (ids over the whole configuration) are migrated without losing or redoing a run."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from neurocl.cli import main
from neurocl.config import ConfigError
from neurocl.executors.attempts import run_lock
from neurocl.migrate import RUN_ID_FORMAT, migrate_store
from neurocl.protocol import canonical_config, config_run_id, load_protocol, protocol_run_id, resolved_config
from neurocl.run import run_protocol
from neurocl.store import RunDir, Store, canonical_json, iter_runs

LOG = Store('.').migrations_log.name
from sweep_fixtures import TINY_PROTOCOL

REPO = Path(__file__).resolve().parent.parent


def format1_id(config: dict) -> str:
    """How run ids were made before format 2: the whole resolved configuration, defaults and all."""
    payload = {k: v for k, v in config.items() if k != "execution"}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def tiny(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_PROTOCOL + extra)
    return p


def invoke(*args: str, code: int = 0):
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == code, res.output
    return res


# ---------------------------------------------------------------------------- the canonical form
def test_canonical_form_keeps_only_what_differs_from_the_defaults():
    proto = load_protocol({
        "name": "x", "dataset": {"name": "digits", "encoding": "flat"},
        "tasks": [{"classes": [0, 1]}, {"classes": [2, 3], "epochs": 2}],
        "training": {"optimizer": {"lr": 0.01}}, "execution": {"threads": 2},
        "model": {"kind": "mlp", "n_in": 64, "hidden": [16], "n_out": 10},
        "rules": [{"name": "ewc", "lambda": 5}],
    })
    assert canonical_config(resolved_config(proto)) == {
        "name": "x",
        "dataset": {"encoding": "flat"},
        "tasks": [{"classes": [0, 1]}, {"classes": [2, 3], "epochs": 2}],
        "training": {"optimizer": {"lr": 0.01}},
        "model": {"kind": "mlp", "n_in": 64, "hidden": [16]},
        "rules": [{"name": "ewc", "lambda": 5.0}],
    }
    # Known answer: this id must never change, or every stored run of this form is renamed.
    assert protocol_run_id(proto) == hashlib.sha256(
        canonical_json(canonical_config(resolved_config(proto))).encode()
    ).hexdigest()[:16] == "f65a3f7e17b58125"


def test_discriminators_stay_so_different_schemas_never_share_an_id():
    lstm = {"name": "x", "tasks": [{}], "model": {"kind": "lstm"}}
    mlp = {"name": "x", "tasks": [{}], "model": {"kind": "mlp"}}
    assert canonical_config(lstm)["model"] == {"kind": "lstm"}
    assert config_run_id(lstm) != config_run_id(mlp)
    naive = load_protocol(tiny_dict(rules=["naive"]))
    joint = load_protocol(tiny_dict(rules=["joint"]))
    assert protocol_run_id(naive) != protocol_run_id(joint)
    assert "rules" not in canonical_config(resolved_config(naive))  # the default rule list


def tiny_dict(**changes) -> dict:
    import yaml

    data = yaml.safe_load(TINY_PROTOCOL)
    data.update(changes)
    return data


@pytest.mark.parametrize("path", sorted((REPO / "protocols").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_new_option_with_a_default_renames_no_run(path):
    # A run stored before an option existed has no value for it in its config.json: leaving any
    # default out of a configuration must give the same id.
    config = resolved_config(load_protocol(path))
    rid = config_run_id(config)
    canonical = canonical_config(config)

    def leaves(node, prefix=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, (*prefix, k))
        else:
            yield prefix

    def present(path_, tree):
        for k in path_:
            if not isinstance(tree, dict) or k not in tree:
                return False
            tree = tree[k]
        return True

    dropped = 0
    for leaf in leaves(config):
        if leaf[0] in ("tasks", "rules") or present(leaf, canonical) or leaf[-1] in ("kind",):
            continue
        older = copy.deepcopy(config)
        node = older
        for k in leaf[:-1]:
            node = node[k]
        del node[leaf[-1]]
        assert config_run_id(older) == rid, leaf
        dropped += 1
    assert dropped > 5
    # The option added with format 2 itself: a store written before it keeps its ids.
    older = copy.deepcopy(config)
    del older["training"]["optimizer"]["fused"]
    assert config_run_id(older) == rid


def test_values_that_differ_change_the_id_and_execution_never_does(tmp_path):
    p = tiny(tmp_path)
    base = protocol_run_id(load_protocol(p))
    assert base == protocol_run_id(load_protocol(p, ["execution.threads=3", "execution.keep_checkpoints=all"]))
    for override in ("seed=1", "training.optimizer.lr=0.002", "model.hidden=[17]", "tasks.1.epochs=2",
                     "training.optimizer.fused=true", "dataset.normalise=standard"):
        assert protocol_run_id(load_protocol(p, [override])) != base, override
    # Setting a value to its default is the same run as leaving it out.
    assert protocol_run_id(load_protocol(p, ["training.optimizer.lr=0.001", "seed=0"])) == base


# ---------------------------------------------------------------------------- fused Adam
def test_fused_adam_trains_and_keeps_dales_law(tmp_path):
    p = tiny(tmp_path)
    plain = run_protocol(p, tmp_path / "store")
    fused = run_protocol(p, tmp_path / "store", ["training.optimizer.fused=true"])
    assert plain.id != fused.id
    R_plain = torch.tensor(plain.read_json("summary.json")["accuracy_matrix"])
    R_fused = torch.tensor(fused.read_json("summary.json")["accuracy_matrix"])
    assert torch.allclose(R_plain, R_fused, atol=0.05), (R_plain, R_fused)

    ei = run_protocol(REPO / "protocols" / "split-digits.yaml", tmp_path / "ei",
                      ["training.optimizer.fused=true", "training.epochs=1", "tasks=[{classes: [0, 1]}]",
                       "recording.activity.trials=0", "execution.progress=none"])
    assert load_model_from_run(ei).check_constraints() == []


def load_model_from_run(rd) -> torch.nn.Module:
    from neurocl.models import build_model

    config = rd.read_json("config.json")
    state = torch.load(RunDir(rd.path).checkpoint(0), map_location="cpu", weights_only=False)["model"]
    model = build_model(config["model"], seed=config["seed"])
    model.load_state_dict(state)
    return model


def test_fused_rmsprop_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_protocol(tiny(tmp_path), ["training.optimizer.name=rmsprop", "training.optimizer.fused=true"])
    assert any("fused" in m and "no fused RMSprop" in m for m in err.value.messages)


# ---------------------------------------------------------------------------- migration
def age(store: Path) -> dict[str, str]:
    """Make ``store`` look as an older neurocl left it: format-1 ids everywhere, no store.json."""
    renames = {}
    for rd in list(iter_runs(store)):
        old = format1_id(rd.read_json("config.json"))
        renames[rd.id] = old
        if rd.summary.exists():
            summary = rd.read_json("summary.json")
            (rd.summary).write_text(json.dumps({**summary, "id": old}))
        rd.path.rename(rd.path.parent / old)
    for manifest in (store / "sweeps").glob("*.json"):
        text = manifest.read_text()
        for new, old in renames.items():
            text = text.replace(new, old)
        manifest.write_text(text)
    (store / "store.json").unlink()
    (store / LOG).unlink(missing_ok=True)
    return renames


def test_a_resumed_sweep_keeps_the_finished_runs_of_an_older_store(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_PROTOCOL)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("protocol: tiny.yaml\nseeds: 3\n")
    store = tmp_path / "store"
    invoke("sweep", "run", str(sweep), "--out", str(store), "--workers", "1")
    assert json.loads((store / "store.json").read_text()) == {"run_id_format": RUN_ID_FORMAT}
    done = {rd.id: rd.done_marker.stat().st_mtime_ns for rd in iter_runs(store)}
    killed = sorted(done)[0]  # this one was killed after its last task boundary, before DONE
    for name in ("DONE", "summary.json", "metrics.parquet"):
        (store / "runs" / killed / name).unlink()
    renames = age(store)
    assert all(old != new for new, old in renames.items())
    manifest = json.loads((store / "sweeps" / "sweep.json").read_text())
    assert {r["id"] for r in manifest["runs"]} == set(renames.values())

    res = invoke("sweep", "run", str(sweep), "--out", str(store), "--workers", "1")
    assert "3 runs renamed to today's run ids" in res.stderr
    assert "done 2, failed 0, to run 1" in res.stdout  # the finished runs were not run again
    assert {rd.id for rd in iter_runs(store) if rd.is_done()} == set(done)
    for rid, mtime in done.items():
        rd = RunDir(store / "runs" / rid)
        if rid != killed:
            assert rd.done_marker.stat().st_mtime_ns == mtime
            assert rd.read_json("summary.json")["id"] == rid
    # The killed run resumed from its checkpoint under its new id, not from the start.
    starts = RunDir(store / "runs" / killed).read_json("meta.json")["attempts"]
    assert [a["resumed_after_task"] for a in starts] == [-1, 1]
    manifest = json.loads((store / "sweeps" / "sweep.json").read_text())
    assert {r["id"] for r in manifest["runs"]} == set(done)
    log = [json.loads(line) for line in (store / LOG).read_text().splitlines()]
    assert {(r["old"], r["new"]) for r in log} == {(old, new) for new, old in renames.items()}
    assert json.loads((store / "store.json").read_text())["run_id_format"] == RUN_ID_FORMAT


def two_old_runs(tmp_path: Path):
    """A store an older neurocl wrote: two finished runs under format-1 ids."""
    p = tiny(tmp_path)
    store = tmp_path / "store"
    a = run_protocol(p, store)
    b = run_protocol(p, store, ["seed=1"])
    return store, a, b, age(store)


def test_store_migrate_command_duplicates_and_held_runs(tmp_path):
    store, a, b, renames = two_old_runs(tmp_path)
    # An even older copy of run a, from before `fused` existed: another old id, same run now.
    older = json.loads((store / "runs" / renames[a.id] / "config.json").read_text())
    del older["training"]["optimizer"]["fused"]
    twin = store / "runs" / format1_id(older)
    twin.mkdir()
    (twin / "config.json").write_text(json.dumps(older))

    with run_lock(RunDir(store / "runs" / renames[b.id]), wait_s=0):  # b is being run elsewhere
        res = invoke("store", "migrate", str(store), code=1)
        assert f"run {renames[b.id]} not migrated: another process is running it" in res.output
        assert f"run {twin.name} is the same configuration as {a.id}" in res.output
        assert not (store / "store.json").exists()  # not done yet: the next open tries again
    res = invoke("store", "migrate", str(store))
    assert {rd.id for rd in iter_runs(store)} == {a.id, b.id}
    assert RunDir(store / "runs" / a.id).is_done() and RunDir(store / "runs" / b.id).is_done()
    # The finished copy kept the id; the bare older copy was set aside, not lost.
    assert (store / "migrated-duplicates" / twin.name / "config.json").exists()
    assert res.output.startswith(f"{store}: 1 runs renamed")  # b, once it was free
    again = invoke("store", "migrate", str(store))
    assert "every run already has its run id" in again.output


def test_migration_is_idempotent_and_finishes_after_a_kill(tmp_path):
    store, a, b, renames = two_old_runs(tmp_path)
    # Killed half-way: a renamed and logged, b not yet, store.json never written.
    (store / "runs" / renames[a.id]).rename(store / "runs" / a.id)
    with open(store / LOG, "a") as fh:
        fh.write(json.dumps({"old": renames[a.id], "new": a.id, "what": "renamed"}) + "\n")
    report = migrate_store(store)
    assert report.renamed == [(renames[b.id], b.id)] and report.complete
    assert RunDir(store / "runs" / a.id).read_json("summary.json")["id"] == a.id  # fixed from the log
    assert migrate_store(store).renamed == []
