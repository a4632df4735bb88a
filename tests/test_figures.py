"""neurocl figures: plotted numbers against the stored ones, determinism, every figure drawn.

Tiny real runs (split digits, 2 tasks, 1 epoch, a 16-unit E/I network) are trained once per
session by the real runner; every test reads them, none trains again.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from neurocl.cli import main
from neurocl.figures import figures, generate
from neurocl.figures.inputs import InputError
from neurocl.figures.masks import chance_jaccard
from neurocl.models import build_model
from neurocl.run import run_protocol
from neurocl.store import RunDir, atomic_write_bytes, atomic_write_json, iter_runs

# One xdist worker for the whole file: the session's runs are trained once, not once per worker.
pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("figures")]
# Determinism of PDF and SVG is checked on figures that, between them, use every kind of
# artist the figures draw (lines and bands, images and cell text, mesh strips, patches).
ARTIST_SAMPLE = ["accuracy-curves", "accuracy-matrix", "weight-histograms", "spectrum"]

BASE = {
    "name": "figures-test",
    "dataset": {"name": "digits", "encoding": "rows", "max_train": 200, "max_test": 100},
    "scenario": "class-incremental",
    "tasks": [{"classes": [0, 1]}, {"classes": [2, 3]}],
    "training": {"epochs": 1, "batch_size": 50, "optimizer": {"name": "adam", "lr": 0.02}},
    "seed": 0,
    "model": {
        "preset": "ei-rnn-64", "n": 16, "n_in": 8, "tau": 2.0, "omega_lambda": 0.0,
        "w_in_range": [0.0, 0.5], "w_out_range": [0.0, 0.5],
        # The figures read what a run stored, whichever backend trained it; torch needs no
        # JIT compilation, which would dominate these tiny runs.
        "backend": "torch",
    },
    "rules": ["naive"],
    "execution": {"progress": "none", "threads": 1},
}
RECORD_ALL = {"histograms": True, "histogram_bins": 12, "weights": True, "activity": {"trials": 2}}
MASK_FIGURES = {"mask-overlap", "bn-similarity"}


def protocol(**changes) -> dict:
    p = copy.deepcopy(BASE)
    for key, value in changes.items():
        target = p
        *path, last = key.split("__")
        for k in path:
            target = target[k]
        target[last] = value
    return p


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """Four runs: naive at two learning rates (two seeds at 0.02, one recording everything)
    and joint; so conditions have one or two seeds, and the learning rate is swept."""
    out = tmp_path_factory.mktemp("figures-store")
    run_protocol(protocol(recording=RECORD_ALL), out)  # naive, lr 0.02, seed 0
    run_protocol(protocol(seed=1), out)
    run_protocol(protocol(rules=["joint"]), out)
    run_protocol(protocol(training__optimizer__lr=0.01), out)
    return out


@pytest.fixture(scope="session")
def built(store, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("figures-png")
    return out, generate(store, out)


def runs_by(store: Path) -> dict[str, dict]:
    """Run id -> config, summary, metrics, read straight from the store files."""
    found = {}
    for rd in iter_runs(store):
        found[rd.id] = {
            "config": rd.read_json("config.json"), "summary": rd.read_json("summary.json"),
            "metrics": pd.read_parquet(rd.metrics), "path": rd.path,
        }
    return found


def find_run(store: Path, rules: str = "naive", lr: float = 0.02, seed: int = 0) -> tuple[str, dict]:
    for rid, r in runs_by(store).items():
        c = r["config"]
        if c["rules"][0]["name"] == rules and c["training"]["optimizer"]["lr"] == lr and c["seed"] == seed:
            return rid, r
    raise LookupError((rules, lr, seed))


def csv(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / f"{name}.csv", keep_default_na=False, na_values=[""])


# ---------------------------------------------------------------------------- all figures
def test_every_registered_figure_is_drawn_or_skipped_with_its_reason(built, store):
    out, manifest = built
    names = set(figures())
    drawn = {e["figure"] for e in manifest["figures"]}
    skipped = {s["name"]: s["reason"] for s in manifest["skipped"]}
    assert drawn | set(skipped) == names and not drawn & set(skipped)
    # Everything these runs recorded is drawn; only the supermask analyses have no data.
    assert set(skipped) == MASK_FIGURES
    assert "mask_jaccard" in skipped["mask-overlap"] and "bn_mean_cosine" in skipped["bn-similarity"]
    assert all("\n" not in r and r for r in skipped.values())
    for entry in manifest["figures"]:
        for f in entry["files"]:
            data = (out / f["path"]).read_bytes()
            assert len(data) > 0
            import hashlib

            assert hashlib.sha256(data).hexdigest() == f["sha256"]
        assert entry["inputs"], entry["name"]


def test_per_run_figures_cover_exactly_the_runs_that_recorded_their_data(built, store):
    _, manifest = built
    rich, _ = find_run(store)
    every = sorted(runs_by(store))
    by_figure = {}
    for e in manifest["figures"]:
        by_figure.setdefault(e["figure"], []).extend(e["inputs"])
    assert by_figure["weight-histograms"] == [rich]
    assert by_figure["activity"] == [rich]
    assert sorted(by_figure["connectivity"]) == every  # the final checkpoint serves the others
    assert sorted(by_figure["spectrum"]) == every
    assert sorted(manifest["inputs"]) == every


# ---------------------------------------------------------------------------- plotted numbers
def test_accuracy_matrix_csv_is_the_stored_matrix(built, store):
    out, _ = built
    m = csv(out, "accuracy-matrix")
    runs = runs_by(store)
    _, joint = find_run(store, rules="joint")
    got = m[m.condition == "rules=joint, training.optimizer.lr=0.02"]
    R = np.full((2, 2), np.nan)
    R[got.after_task, got.eval_task] = got["mean"]
    assert R.tolist() == joint["summary"]["accuracy_matrix"]  # exact: the same definition
    assert (got["n_seeds"] == 1).all()
    two = [r for r in runs.values() if r["config"]["rules"][0]["name"] == "naive" and r["config"]["training"]["optimizer"]["lr"] == 0.02]
    assert len(two) == 2
    expected = np.mean([r["summary"]["accuracy_matrix"] for r in two], axis=0)
    got = m[m.condition == "rules=naive, training.optimizer.lr=0.02"]
    R[got.after_task, got.eval_task] = got["mean"]
    np.testing.assert_allclose(R, expected, rtol=0, atol=1e-12)
    assert (got["n_seeds"] == 2).all()


def _seedless(config: dict) -> str:
    c = {k: v for k, v in config.items() if k not in ("seed", "execution", "recording", "description")}
    return json.dumps(c, sort_keys=True)


def test_average_accuracy_csv_is_the_mean_over_seeds_of_the_summaries(built, store):
    out, _ = built
    a = csv(out, "average-accuracy")
    groups: dict[str, list] = {}
    for r in runs_by(store).values():  # grouped here from config.json, not by the figure code
        groups.setdefault(_seedless(r["config"]), []).append(r["summary"]["average_accuracy"])
    expected = sorted((len(v), tuple(np.round(np.mean(v, axis=0), 12))) for v in groups.values())
    got = sorted(
        (int(g["n_seeds"].iat[0]), tuple(np.round(g.sort_values("tasks_learned")["mean"].to_numpy(), 12)))
        for _, g in a.groupby("condition")
    )
    assert got == expected
    assert sorted(a.condition.unique()) == [
        "rules=joint, training.optimizer.lr=0.02", "rules=naive, training.optimizer.lr=0.01",
        "rules=naive, training.optimizer.lr=0.02",
    ]


def test_accuracy_curves_csv_are_the_stored_accuracies(built, store):
    out, _ = built
    c = csv(out, "accuracy-curves")
    _, joint = find_run(store, rules="joint")
    acc = joint["metrics"][joint["metrics"].metric == "acc"]
    got = c[c.condition == "rules=joint, training.optimizer.lr=0.02"]
    merged = acc.merge(got, on=["eval_task", "global_epoch"], validate="one_to_one")
    assert len(merged) == len(acc) == len(got) == 2 * 3  # 2 tasks x (untrained + 2 epochs)
    assert (merged["value"] == merged["mean"]).all()
    _, s0 = find_run(store, seed=0)
    _, s1 = find_run(store, seed=1)
    a0, a1 = (r["metrics"][r["metrics"].metric == "acc"].set_index(["eval_task", "global_epoch"])["value"] for r in (s0, s1))
    got = c[c.condition == "rules=naive, training.optimizer.lr=0.02"].set_index(["eval_task", "global_epoch"])
    np.testing.assert_allclose(got["mean"], ((a0 + a1) / 2).loc[got.index], atol=1e-12)
    np.testing.assert_allclose(got["std"], (a0 - a1).abs().loc[got.index] / np.sqrt(2), atol=1e-12)


def test_weight_moments_csv_are_the_recorded_statistics(built, store):
    out, _ = built
    w = csv(out, "weight-moments")
    _, joint = find_run(store, rules="joint")
    m = joint["metrics"]
    stored = m[m.metric.isin(["weight_skewness", "weight_kurtosis"])]
    got = w[w.condition == "rules=joint, training.optimizer.lr=0.02"]
    merged = stored.merge(got, on=["metric", "layer", "global_epoch"], validate="one_to_one")
    assert len(merged) == len(stored) == len(got) > 0
    np.testing.assert_array_equal(merged["value"], merged["mean"])
    assert set(got.statistic) == {"skewness", "excess kurtosis"}


def test_weight_histograms_csv_are_the_recorded_counts(built, store):
    out, _ = built
    rid, rich = find_run(store)
    h = csv(out, f"weight-histograms-{rid}")
    stored = pd.read_parquet(rich["path"] / "histograms.parquet")
    key = ["layer", "global_epoch", "bin_left"]
    merged = stored.merge(h, on=key, suffixes=("", "_csv"), validate="one_to_one")
    assert len(merged) == len(stored) == len(h)
    assert (merged["count"] == merged["count_csv"]).all()
    area = (h["density"] * (h["bin_right"] - h["bin_left"])).groupby([h["layer"], h["global_epoch"]]).sum()
    np.testing.assert_allclose(area, 1.0, rtol=1e-9)


def _effective_from_checkpoint(run: dict) -> tuple[np.ndarray, np.ndarray]:
    config = run["config"]
    model = build_model(config["model"], seed=config["seed"])
    state = torch.load(RunDir(run["path"]).last_checkpoint()[1], map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    with torch.no_grad():
        return model.effective_weights()["W_rec"].double().numpy(), model.sign.numpy()


def test_connectivity_csv_is_the_effective_matrix_with_e_before_i(built, store):
    out, _ = built
    rid, rich = find_run(store)
    c = csv(out, f"connectivity-{rid}")
    with np.load(rich["path"] / "weights" / "t001-e000.npz") as f:
        W = f["W_rec"].astype(np.float64)
    assert set(c["source"]) == {"weights/t001-e000.npz"}  # the last snapshot
    np.testing.assert_array_equal(c["weight"], W[c["post_unit"], c["pre_unit"]])
    n = W.shape[0]
    assert len(c) == n * n
    order = c.drop_duplicates("col").sort_values("col")
    assert list(order["pre_type"]) == sorted(order["pre_type"])  # every E before every I
    assert (c.loc[c.pre_type == "E", "weight"] >= 0).all() and (c.loc[c.pre_type == "I", "weight"] <= 0).all()

    jid, joint = find_run(store, rules="joint")  # no snapshots: rebuilt from the checkpoint
    c = csv(out, f"connectivity-{jid}")
    assert set(c["source"]) == {"checkpoints/task-001.pt"}
    W, sign = _effective_from_checkpoint(joint)
    np.testing.assert_allclose(c["weight"], W[c["post_unit"], c["pre_unit"]], rtol=0, atol=0)
    assert ((c["pre_type"] == "E") == (sign[c["pre_unit"]] > 0)).all()


def test_spectrum_csv_is_the_spectrum_of_the_effective_matrix(built, store):
    out, _ = built
    rid, rich = find_run(store)
    s = csv(out, f"spectrum-{rid}")
    with np.load(rich["path"] / "weights" / "t001-e000.npz") as f:
        ev = np.linalg.eigvals(f["W_rec"].astype(np.float64))
    assert len(s) == len(ev)
    np.testing.assert_allclose(s["spectral_radius"], np.abs(ev).max(), rtol=1e-12)
    np.testing.assert_allclose(np.sort(s["modulus"]), np.sort(np.abs(ev)), rtol=1e-12)
    assert s["modulus"].is_monotonic_decreasing


def test_activity_csv_is_the_recorded_trial(built, store):
    out, _ = built
    rid, rich = find_run(store)
    a = csv(out, f"activity-{rid}")
    with np.load(rich["path"] / "activity.npz") as f:
        r0, sign = f["task1_r"][0], f["sign"]
    units = a[(a.task == 1) & (a.unit >= 0)]
    np.testing.assert_array_equal(units["rate"], r0[units["step"], units["unit"]].astype(np.float64))
    assert ((units["type"] == "E") == (sign[units["unit"]] > 0)).all()
    mean_e = a[(a.task == 1) & (a.unit == -1) & (a.type == "E")].sort_values("step")["rate"]
    np.testing.assert_allclose(mean_e, r0[:, sign > 0].mean(axis=1), rtol=1e-6)


def test_parameter_sweep_csv_puts_each_seed_at_its_setting(built, store):
    out, _ = built
    s = csv(out, "parameter-sweep")
    assert set(s["parameter"]) == {"training.optimizer.lr"}
    runs = runs_by(store)
    assert sorted(s["run_id"]) == sorted(runs)
    for _, row in s.iterrows():
        r = runs[row["run_id"]]
        assert row["value"] == r["config"]["training"]["optimizer"]["lr"]
        assert row["series"] == r["config"]["rules"][0]["name"]
        assert row["final_average_accuracy"] == pytest.approx(r["summary"]["final_average_accuracy"], abs=1e-12)
    two = s[(s.series == "naive") & (s.value == 0.02)]
    assert len(two) == 2 and (two["mean"] == two["final_average_accuracy"].mean()).all()


# ---------------------------------------------------------------------------- determinism
def _png_chunks(data: bytes) -> list[bytes]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        chunks.append(kind)
        pos += 12 + length
    return chunks


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_same_inputs_give_byte_identical_files(store, built, tmp_path, fmt):
    # PNG: the session's build of every figure; PDF and SVG: a sample drawn here. Then once
    # more into a second directory, and every file (images, CSVs, manifest) compared.
    only = None if fmt == "png" else ARTIST_SAMPLE
    if fmt == "png":
        first = built[0]
    else:
        first = tmp_path / "a"
        generate(store, first, fmt=fmt, only=only)
    second = tmp_path / "b"
    generate(store, second, fmt=fmt, only=only)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert sum(n.endswith(f".{fmt}") for n in names) >= (15 if fmt == "png" else 7)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # What would differ between two builds a second apart must simply not be there.
    sample = (first / f"accuracy-curves.{fmt}").read_bytes()
    assert b"Matplotlib v" not in sample and b"matplotlib version" not in sample.lower()
    if fmt == "png":
        assert not {b"tEXt", b"iTXt", b"zTXt", b"tIME"} & set(_png_chunks(sample))
    if fmt == "pdf":
        assert b"/CreationDate" not in sample and b"/Producer" not in sample
    if fmt == "svg":
        assert b"<dc:date>" not in sample
    def keys(obj):
        if isinstance(obj, dict):
            return set(obj) | {k for v in obj.values() for k in keys(v)}
        return {k for v in obj for k in keys(v)} if isinstance(obj, list) else set()

    manifest = json.loads((first / "manifest.json").read_text())
    assert not [k for k in keys(manifest) if "time" in k.lower() or "date" in k.lower()]
    assert {"figures", "skipped", "inputs"} <= set(manifest)


# ---------------------------------------------------------------------------- inputs and skips
def test_a_results_table_gives_the_same_numbers_and_skips_artefact_figures(store, built, tmp_path):
    table = tmp_path / "results.csv"
    res = CliRunner().invoke(main, ["results", str(store), "--out", str(table)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "from-table"
    manifest = generate(table, out)
    for name in ("accuracy-matrix", "average-accuracy", "accuracy-curves", "weight-moments", "parameter-sweep"):
        assert (out / f"{name}.csv").read_bytes() == (built[0] / f"{name}.csv").read_bytes(), name
    skipped = {s["name"]: s["reason"] for s in manifest["skipped"]}
    for name in ("weight-histograms", "connectivity", "spectrum", "activity"):
        assert "results table" in skipped[name]


@pytest.fixture(scope="session")
def mlp_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("figures-mlp")
    p = protocol(model={"preset": "mlp-784-128", "n_in": 64, "hidden": [8]}, recording={"activity": {"trials": 1}})
    p["dataset"]["encoding"] = "flat"
    run_protocol(p, out)
    return out


def test_network_figures_skip_a_network_without_e_and_i_units(mlp_store, tmp_path):
    manifest = generate(mlp_store, tmp_path, only=["connectivity", "spectrum", "activity", "accuracy-matrix"])
    skipped = {s["name"]: s["reason"] for s in manifest["skipped"]}
    assert "not an E/I network" in skipped["connectivity"] and "not an E/I network" in skipped["spectrum"]
    assert "not an E/I network" in skipped["activity"]
    assert [e["figure"] for e in manifest["figures"]] == ["accuracy-matrix"]


# ---------------------------------------------------------------------------- mask analyses
@pytest.fixture(scope="session")
def supermask_store(tmp_path_factory) -> Path:
    """The real supermask rule on a tiny masked MLP: two seeds, three tasks."""
    out = tmp_path_factory.mktemp("figures-supermask")
    p = protocol(
        model={"preset": "supsup-fc300", "n_in": 64, "hidden": [16, 16], "n_out": 10, "n_tasks": 3},
        rules=[{"name": "supermask"}], scenario="task-incremental",
    )
    p["dataset"]["encoding"] = "flat"
    p["tasks"].append({"classes": [4, 5]})
    for seed in (0, 1):
        run_protocol({**p, "seed": seed}, out)
    return out


def test_mask_figures_show_what_the_supermask_rule_recorded(supermask_store, tmp_path):
    manifest = generate(supermask_store, tmp_path, only=sorted(MASK_FIGURES))
    assert {e["figure"] for e in manifest["figures"]} == MASK_FIGURES
    stored = pd.concat(r["metrics"] for r in runs_by(supermask_store).values())

    def per_pair(metric, how="mean"):
        rows = stored[stored.metric == metric]
        return rows.groupby(["layer", "task", "eval_task"])["value"].agg(how)

    m = csv(tmp_path, "mask-overlap")
    assert len(m) == 3 * 3 * 2  # three layers, both orders of three pairs
    jac, chance, p_max = per_pair("mask_jaccard"), per_pair("mask_jaccard_chance"), per_pair("mask_jaccard_p", "max")
    for _, row in m.iterrows():
        key = (row.layer, *sorted((row.task_i, row.task_j)))
        assert row.jaccard == pytest.approx(jac[key], abs=1e-12)
        assert row.chance == pytest.approx(chance[key], abs=1e-12)
        assert row.p_value_max == pytest.approx(p_max[key], abs=1e-12)
        assert row.n_seeds == 2
    b = csv(tmp_path, "bn-similarity")
    cos = per_pair("bn_mean_cosine")
    assert len(b) == 2 * len(cos)
    for _, row in b.iterrows():
        assert row["mean"] == pytest.approx(cos[(row.layer, *sorted((row.task_i, row.task_j)))], abs=1e-12)


# The documented layout written through the real store functions, with densities but no
# recorded chance level: two seeds, three tasks, two layers, masks of density 0.5 for the
# first two tasks and 0.2 for the third.
DENSITY = {0: 0.5, 1: 0.5, 2: 0.2}
LAYERS = ("fc1", "fc2")


def _mask_rows(seed: int, with_density: bool = True) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for layer in LAYERS:
        for i in range(3):
            if with_density:
                rows.append(dict(task=i, epoch=-1, global_epoch=-1, eval_task=-1, metric="mask_density", layer=layer, value=DENSITY[i]))
            for j in range(i + 1, 3):
                jac = float(chance_jaccard(DENSITY[i], DENSITY[j]) + rng.uniform(-0.02, 0.02))
                rows.append(dict(task=j, epoch=-1, global_epoch=-1, eval_task=i, metric="mask_jaccard", layer=layer, value=jac))
                rows.append(dict(task=j, epoch=-1, global_epoch=-1, eval_task=i, metric="bn_mean_cosine", layer=layer, value=float(rng.uniform(-1, 1))))
    return rows


def _write_mask_store(root: Path, with_density: bool = True) -> Path:
    for seed in (0, 1):
        config = {"name": "supermask-layout", "seed": seed, "rules": [{"name": "supermask"}], "model": {"kind": "supsup-test"}}
        rd = RunDir(root / "runs" / f"mask-seed{seed}")
        atomic_write_json(rd.config, config)
        buf = io.BytesIO()
        pd.DataFrame(_mask_rows(seed, with_density)).to_parquet(buf, index=False)
        atomic_write_bytes(rd.metrics, buf.getvalue())
        atomic_write_json(rd.summary, {"name": "supermask-layout"})
        atomic_write_json(rd.done_marker, {})
    return root


def test_mask_overlap_chance_level_from_the_mask_densities(tmp_path):
    store = _write_mask_store(tmp_path / "store")
    out = tmp_path / "out"
    manifest = generate(store, out, only=sorted(MASK_FIGURES))
    assert {e["figure"] for e in manifest["figures"]} == MASK_FIGURES
    m = csv(out, "mask-overlap")
    stored = pd.concat([pd.DataFrame(_mask_rows(s)) for s in (0, 1)])
    jac = stored[stored.metric == "mask_jaccard"].groupby(["layer", "eval_task", "task"])["value"].mean()
    for _, row in m.iterrows():
        i, j = sorted((row.task_i, row.task_j))  # symmetric: both orders plotted
        assert row.jaccard == pytest.approx(jac[(row.layer, i, j)], abs=1e-12)
        assert row.chance == pytest.approx(chance_jaccard(DENSITY[i], DENSITY[j]), abs=1e-12)
        assert row.n_seeds == 2
    assert len(m) == len(LAYERS) * 3 * 2  # off-diagonal cells only
    assert m.loc[(m.task_i == 0) & (m.task_j == 1), "chance"].iloc[0] == pytest.approx(1 / 3)
    b = csv(out, "bn-similarity")
    bn = stored[stored.metric == "bn_mean_cosine"].groupby(["layer", "eval_task", "task"])["value"].mean()
    for _, row in b.iterrows():
        i, j = sorted((row.task_i, row.task_j))
        assert row["mean"] == pytest.approx(bn[(row.layer, i, j)], abs=1e-12)


def test_mask_overlap_without_a_chance_level_is_skipped_with_the_reason(tmp_path):
    store = _write_mask_store(tmp_path / "store", with_density=False)
    manifest = generate(store, tmp_path / "out", only=["mask-overlap", "bn-similarity"])
    skipped = {s["name"]: s["reason"] for s in manifest["skipped"]}
    assert "chance level" in skipped["mask-overlap"]
    assert [e["figure"] for e in manifest["figures"]] == ["bn-similarity"]


# ---------------------------------------------------------------------------- the command
def test_command_draws_the_selected_figures_and_reports_skips(store, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(
        main, ["figures", str(store), "--out", str(out), "--only", "accuracy-matrix,mask-overlap", "--format", "svg", "--style", "talk"]
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["accuracy-matrix.csv", "accuracy-matrix.svg", "manifest.json"]
    lines = [line for line in res.output.splitlines() if line.startswith("skipped mask-overlap: ")]
    assert len(lines) == 1 and "mask_jaccard" in lines[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["style"] == "talk" and manifest["format"] == "svg"


def test_command_rejects_an_unknown_figure_name_without_a_traceback(store, tmp_path):
    res = CliRunner().invoke(main, ["figures", str(store), "--out", str(tmp_path), "--only", "accuracy-matrx"])
    assert res.exit_code != 0
    assert "accuracy-matrx" in res.output and "accuracy-matrix" in res.output
    assert "Traceback" not in res.output


def test_command_lists_every_figure(tmp_path):
    res = CliRunner().invoke(main, ["figures", "--list"])
    assert res.exit_code == 0
    assert [line.split()[0] for line in res.output.splitlines()] == list(figures())


def test_style_sheets_ship_inside_the_package():
    import neurocl

    styles = Path(neurocl.__file__).parent / "styles"
    assert {p.stem for p in styles.glob("*.mplstyle")} >= {"paper", "talk"}


def test_styles_change_the_drawing_not_the_numbers(store, built, tmp_path):
    manifest = generate(store, tmp_path, only=["average-accuracy"], style="talk")
    assert (tmp_path / "average-accuracy.csv").read_bytes() == (built[0] / "average-accuracy.csv").read_bytes()
    assert (tmp_path / "average-accuracy.png").read_bytes() != (built[0] / "average-accuracy.png").read_bytes()
    assert manifest["style"] == "talk"


def test_a_swept_rule_setting_is_a_parameter_and_a_run_without_it_a_reference(store, tmp_path):
    # Relabel the stored runs as an EWC lambda sweep with a naive baseline, in a results
    # table: rule settings live in the config.rules column as the store flattens them.
    from neurocl.results import load

    df = load(store)
    rules = {
        rid: f"[{{'name': 'ewc', 'lambda': {lam}}}]" if lam is not None else "[{'name': 'naive'}]"
        for rid, lam in zip(sorted(df.run_id.unique()), (1.0, 10.0, 100.0, None))
    }
    df["config.rules"] = df["run_id"].map(rules)
    df["config.training.optimizer.lr"] = 0.02
    df["config.seed"] = 0
    table = tmp_path / "sweep.parquet"
    df.to_parquet(table)
    generate(table, tmp_path / "out", only=["parameter-sweep"])
    s = csv(tmp_path / "out", "parameter-sweep")
    assert set(s["parameter"]) == {"rules.0.lambda"}
    swept = s[~s["reference"]]
    assert sorted(swept["value"]) == [1.0, 10.0, 100.0] and set(swept["series"]) == {"ewc"}
    ref = s[s["reference"]]
    assert list(ref["series"]) == ["naive"] and ref["value"].isna().all()


# ---------------------------------------------------------------------------- selecting runs
@pytest.fixture(scope="session")
def studies_store(tmp_path_factory) -> Path:
    """Runs of two 'studies' named like the reproductions: s1-naive, s1-joint, s2-naive."""
    out = tmp_path_factory.mktemp("figures-studies")
    run_protocol(protocol(name="s1-naive"), out)
    run_protocol(protocol(name="s1-joint", rules=["joint"]), out)
    run_protocol(protocol(name="s2-naive", seed=3), out)
    return out


def test_runs_glob_draws_only_the_matching_runs(studies_store, tmp_path):
    ids = {r["config"]["name"]: rid for rid, r in runs_by(studies_store).items()}
    manifest = generate(studies_store, tmp_path, only=["average-accuracy"], runs=["s1-*"])
    assert manifest["inputs"] == sorted([ids["s1-naive"], ids["s1-joint"]])
    # Conditions are labelled among the selected runs: s2-naive is not one of them.
    conds = set(csv(tmp_path, "average-accuracy")["condition"])
    assert len(conds) == 2 and not any("s2" in c for c in conds), conds
    with pytest.raises(InputError, match="no finished run is named like nothing-\\*"):
        generate(studies_store, tmp_path / "none", runs=["nothing-*"])


def test_split_draws_one_figure_set_per_study(studies_store, tmp_path):
    res = CliRunner().invoke(main, ["figures", str(studies_store), "--out", str(tmp_path), "--split", r"(s\d+)-",
                                    "--only", "accuracy-matrix"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s1", "s2"]
    ids = {r["config"]["name"]: rid for rid, r in runs_by(studies_store).items()}
    s1 = json.loads((tmp_path / "s1" / "manifest.json").read_text())
    s2 = json.loads((tmp_path / "s2" / "manifest.json").read_text())
    assert s1["inputs"] == sorted([ids["s1-naive"], ids["s1-joint"]]) and s2["inputs"] == [ids["s2-naive"]]
    # The same figures as drawing each study on its own.
    alone = generate(studies_store, tmp_path / "alone", only=["accuracy-matrix"], runs=["s2-*"])
    assert alone["figures"] == s2["figures"]
    bad = CliRunner().invoke(main, ["figures", str(studies_store), "--out", str(tmp_path), "--split", "x"])
    assert bad.exit_code != 0 and "matches the start of no run name" in bad.output
