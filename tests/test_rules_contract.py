"""The contract every rule keeps on every model, through the real runner.

Constraints hold after every step (absent synapses exactly 0, fixed ones bit-identical), the
rule's state survives a save and a ``weights_only`` load, rules compose, and a run killed at a
task boundary resumes to the bit-identical result.
"""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import neurocl.run
from neurocl.config import ConfigError
from neurocl.data.sequence import task_epochs
from neurocl.models import build_model
from neurocl.protocol import load_protocol
from neurocl.rules import build_rules
from neurocl.run import Runner, run_protocol
from neurocl.sim.weights import PHI
from neurocl.store import RunDir

# Each rule with options that exercise its less common paths.
RULES = {
    "naive": ["naive"],
    "joint": ["joint"],
    "l2": [{"name": "l2", "norm": "unsquared", "lambda": 2.0}],
    "ewc": [{"name": "ewc", "fisher": "sampled", "mode": "separate", "samples": 12, "lambda": 50.0}],
    "online-ewc": [{"name": "online-ewc", "fisher": "r5", "batches": 1, "gamma": 0.5}],
    "si": [{"name": "si", "c": 0.5}],
    "mas": [{"name": "mas", "samples": 12}],
    "magnitude": [{"name": "magnitude", "kappa": 0.9, "magnitude_of": "effective", "include_biases": True}],
    "ewc+magnitude": [{"name": "ewc", "mode": "merged", "samples": 12}, {"name": "magnitude", "kappa": 0.5}],
    "si+l2": [{"name": "si"}, {"name": "l2"}],
}
CONSOLIDATION = {"l2", "ewc", "online-ewc", "si", "mas"}

MODELS = {
    # Small E/I network with absent and fixed synapses, and the Pascanu regulariser on (so SI's
    # unregularised gradient comes from the runner's split backward pass).
    "ei-rnn": ("rows", {"preset": "ei-rnn-64", "n_in": 8, "n": 16, "tau": 2.0, "p_connect": 0.8,
                        "plastic_fraction": 0.8, "w_in_range": [0, 0.5], "w_out_range": [0, 0.5], "omega_lambda": 1.0}),
    # The same network as Dale's ANN: E units with interneuron pools per pathway, whose factors
    # (W_rec_ix, W_rec_ei, ...) are trainable parameters with their own connection masks.
    "ei-rnn-dann": ("rows", {"preset": "ei-rnn-64", "n_in": 8, "n": 16, "tau": 2.0, "p_connect": 0.8,
                             "plastic_fraction": 0.8, "w_in_range": [0, 0.5], "w_out_range": [0, 0.5],
                             "omega_lambda": 1.0, "dale": "dann", "init": "dann"}),
    "lstm": ("rows", {"preset": "lstm-64", "n_in": 8, "n_embed": 8, "hidden": 8}),
    "mlp": ("flat", {"preset": "mlp-784-128", "n_in": 64, "hidden": [16], "dropout": 0.2}),
}


def protocol(rules, model="ei-rnn"):
    encoding, model_cfg = MODELS[model]
    return {
        "name": "contract",
        "dataset": {"name": "digits", "encoding": encoding, "max_train": 48, "max_test": 20},
        # Task-incremental: the class mask matters for the importances too.
        "scenario": "task-incremental",
        "tasks": [{"classes": [0, 1]}, {"classes": [2, 3]}, {"classes": [4, 5]}],
        "training": {"epochs": 1, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.02}, "grad_clip": 1.0},
        "evaluation": {"untrained": False},
        "recording": {"weight_stats": False},
        "model": model_cfg,
        "rules": rules,
        "seed": 5,
        "execution": {"progress": "none"},
    }


class ConstraintWatch:
    """Checks the model before every optimiser step, i.e. after every previous complete step."""

    def __init__(self, monkeypatch):
        self.violations: list[str] = []
        self.steps = 0
        original = neurocl.run.make_optimizer

        def make_optimizer(params, cfg):
            opt = original(params, cfg)
            opt.register_step_pre_hook(lambda *_: self.check())
            return opt

        monkeypatch.setattr(neurocl.run, "make_optimizer", make_optimizer)

    def watch(self, runner):
        # The runner builds its model inside execute(); find it through the context then.
        self.runner = runner

    def check(self):
        model = self.runner.model
        self.steps += 1
        self.violations += model.check_constraints()
        self.violations += fixed_synapse_changes(model)


_INITIAL: dict = {}


def fixed_synapse_changes(model) -> list[str]:
    """Absent synapses exactly 0; fixed ones equal to those of the freshly built model, bit for bit."""
    if not hasattr(model, "plastic_mask"):
        return []
    key = (model.config.model_dump_json(), model.seed)
    init = _INITIAL.setdefault(key, build_model(model.config, seed=model.seed))
    fixed = (model.plastic_mask == 0) & (model.connectivity_mask > 0)
    absent = model.connectivity_mask == 0
    with torch.no_grad():
        w, w0 = model.effective_weights()["W_rec"], init.effective_weights()["W_rec"]
    problems = []
    if getattr(model, "dann_factors", None):
        # DANN: the effective matrix is E minus the interneurons' inhibition, which trains; the
        # fixed and absent synapses are the E->E ones, phi(M * W_rec + W_fixed).
        f = PHI[model.config.phi]
        with torch.no_grad():
            w = f(model.plastic_mask * model.W_rec + model.w_fixed)
            w0 = f(init.plastic_mask * init.W_rec + init.w_fixed)
            for name in model.dann_factors:
                out = getattr(model, name + "_mask") == 0
                if not torch.equal(getattr(model, name).detach()[out], getattr(init, name).detach()[out]):
                    problems.append(f"an absent interneuron synapse of {name} changed")
    if not torch.equal(w[fixed], w0[fixed]):
        problems.append("a fixed synapse changed")
    if not torch.equal(model.W_rec.detach()[model.plastic_mask == 0], init.W_rec.detach()[init.plastic_mask == 0]):
        problems.append("the raw parameter of a fixed or absent synapse changed")
    if torch.any(w[absent] != 0):
        problems.append("an absent synapse is not 0")
    return problems


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def run_keeping_the_contract(tmp_path, monkeypatch, rules, model) -> Runner:
    """Run ``rules`` on ``model``, checking the constraints after every optimiser step; the runner."""
    watch = ConstraintWatch(monkeypatch)
    runner = Runner(load_protocol(protocol(rules, model)), tmp_path)
    watch.watch(runner)
    runner.execute()
    assert watch.steps > 0
    assert watch.violations == [], sorted(set(watch.violations))
    assert runner.model.check_constraints() == [] and fixed_synapse_changes(runner.model) == []
    assert np.isfinite(np.array(runner.rd.read_json("summary.json")["accuracy_matrix"])).all()
    return runner


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("rules", list(RULES))
def test_rule_contract(tmp_path, monkeypatch, rules, model):
    runner = run_keeping_the_contract(tmp_path, monkeypatch, RULES[rules], model)
    if model == "ei-rnn-dann":
        check_dann_state(runner)

    # The state survives save and a weights_only load: the reloaded rule gives the same
    # penalty, also away from the anchor.
    perturb(runner.model)
    fresh = build_rules(runner.proto.rules)
    for rule, new in zip(runner.rules, fresh):
        new.setup(runner.ctx)
        new.load_state_dict(roundtrip(rule.state_dict()))
        before, after = rule.penalty(runner.ctx), new.penalty(runner.ctx)
        if rule.name in CONSOLIDATION:
            assert before is not None and before.item() > 0, rule.name
            assert torch.equal(before.detach(), after.detach()), rule.name
        else:
            assert before is None and after is None


DANN_FACTORS = ["W_rec_ix", "W_rec_ei", "W_in_ix", "W_in_ei", "W_out_ix", "W_out_ei"]


def check_dann_state(runner):
    """The rules see the interneuron factors as parameters like any other."""
    model = runner.model
    assert model.dann_factors == DANN_FACTORS
    for rule in runner.rules:
        if rule.name == "l2":
            assert set(DANN_FACTORS) <= set(rule.anchor), rule.name
        elif rule.name in CONSOLIDATION:
            importance = rule.terms[-1]["importance"]
            assert set(DANN_FACTORS) <= set(importance), rule.name
            for name in DANN_FACTORS:
                imp = importance[name]
                assert imp.shape == getattr(model, name).shape and torch.isfinite(imp).all(), (rule.name, name)
                # Masked-out interneuron synapses carry no importance.
                assert torch.all(imp[getattr(model, name + "_mask") == 0] == 0), (rule.name, name)
            assert sum(float(importance[n].abs().sum()) for n in DANN_FACTORS) > 0, rule.name


# Rules that the contract above does not list, on DANN: replay, generative replay.
DANN_EXTRA_RULES = {
    "replay": [{"name": "replay", "memory": 20}],
    "replay+ewc": [{"name": "replay", "memory": 20, "mixing": "append"}, {"name": "ewc", "samples": 12}],
    "generative-replay": [{"name": "generative-replay", "generator": "vae", "latent": 4, "hidden": [16],
                           "steps": 3, "batch_size": 8, "replayed_per_real": 1.0}],
}


@pytest.mark.parametrize("rules", list(DANN_EXTRA_RULES))
def test_replay_rules_keep_the_contract_on_dann(tmp_path, monkeypatch, rules):
    check_dann_state(run_keeping_the_contract(tmp_path, monkeypatch, DANN_EXTRA_RULES[rules], "ei-rnn-dann"))


def test_supermask_refuses_a_dann_network_clearly(tmp_path):
    """Supermasks need a supermask model (masked-mlp): the E/I network, DANN or not, is refused."""
    proto = load_protocol(protocol([{"name": "supermask"}], "ei-rnn-dann"), check=False)
    with pytest.raises(ValueError, match="supermask model"):
        Runner(proto, tmp_path).execute()


def _final_state(rd: RunDir):
    _, path = rd.last_checkpoint()
    return torch.load(path, weights_only=True)


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so the runner writes no FAILED marker."""


@pytest.mark.parametrize("rules", list(RULES))
def test_killed_and_resumed_run_is_bit_identical(tmp_path, monkeypatch, rules):
    p = protocol(RULES[rules], "ei-rnn")
    reference = run_protocol(p, tmp_path / "ref")

    original = Runner.save_checkpoint

    def save_then_die(self, task, global_epoch):
        original(self, task, global_epoch)
        if task == 0:
            raise Killed()

    monkeypatch.setattr(Runner, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run_protocol(p, tmp_path / "killed")
    monkeypatch.setattr(Runner, "save_checkpoint", original)
    interrupted = RunDir(tmp_path / "killed" / "runs" / reference.id)
    assert interrupted.last_checkpoint()[0] == 0 and not interrupted.is_done()

    resumed = run_protocol(p, tmp_path / "killed")
    assert resumed.read_json("meta.json")["attempts"][-1]["resumed_after_task"] == 0
    ref_R = reference.read_json("summary.json")["accuracy_matrix"]
    assert resumed.read_json("summary.json")["accuracy_matrix"] == ref_R
    ref_state, res_state = _final_state(reference), _final_state(resumed)
    for k, v in ref_state["model"].items():
        assert torch.equal(v, res_state["model"][k]), k
    assert _nested_equal(ref_state["rules"], res_state["rules"])


def _nested_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_nested_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_nested_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_sigkilled_composed_run_resumes_bit_identical(tmp_path):
    """A real SIGKILL after the first checkpoint, with two rules that both keep state."""
    p = protocol(RULES["ewc+magnitude"] + [{"name": "si"}], "ei-rnn")
    reference = run_protocol(p, tmp_path / "ref")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(p))
    out = tmp_path / "killed"
    # Hold the process just after its first checkpoint so that the kill lands there.
    script = (
        "import sys, time; from neurocl.run import Runner, run_protocol\n"
        "orig = Runner.save_checkpoint\n"
        "def hold(self, task, ge):\n"
        "    orig(self, task, ge)\n"
        "    if task == 0: time.sleep(600)\n"
        "Runner.save_checkpoint = hold\n"
        f"run_protocol({str(path)!r}, {str(out)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    run_dir = out / "runs" / reference.id
    deadline = time.time() + 120
    try:
        while not (run_dir / "checkpoints" / "task-000.pt").exists():
            assert time.time() < deadline and proc.poll() is None, "the run ended before its first checkpoint"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not RunDir(run_dir).is_done()
    resumed = run_protocol(p, out)
    assert resumed.read_json("summary.json")["accuracy_matrix"] == reference.read_json("summary.json")["accuracy_matrix"]
    assert _nested_equal(_final_state(reference)["rules"], _final_state(resumed)["rules"])


SHIPPED = ["r2-baseline", "r2-magnitude", "r3-naive", "r3-si", "r5-joint", "r5-naive", "r5-l2", "r5-ewc"]
PROTOCOLS = Path(__file__).resolve().parent.parent / "protocols"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_protocol_validates(name):
    proto = load_protocol(PROTOCOLS / f"{name}.yaml")
    assert proto.name == name
    # The documented switch to full MNIST is a valid protocol too (schema only: the full set
    # need not be on this machine).
    assert load_protocol(PROTOCOLS / f"{name}.yaml", ["dataset.name=mnist"], check=False).dataset.name == "mnist"


def test_r5_ewc_trains_three_epochs_on_a_and_nine_on_b(tmp_path):
    proto = load_protocol(PROTOCOLS / "r5-ewc.yaml")
    assert [task_epochs(proto, i) for i in range(2)] == [3, 9]
    # The runner honours per-task epochs: a tiny run on digits, then count the recorded epochs.
    p = protocol(["naive"], "mlp")
    p["tasks"] = [{"classes": [0, 1], "epochs": 2}, {"classes": [2, 3]}, {"classes": [4, 5], "epochs": 3}]
    rd = run_protocol(p, tmp_path)
    m = pd.read_parquet(rd.metrics)
    epochs = m[m.metric == "train_loss"].groupby("task").size().to_dict()
    assert epochs == {0: 2, 1: 1, 2: 3}


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"name": "ewc", "samples": 10, "batches": 2}, "samples or batches"),
        ({"name": "ewc", "lamda": 10}, "lamda"),
        ({"name": "magnitude", "kappa": 1.5}, "kappa"),
        ({"name": "l2", "norm": "cubed"}, "norm"),
    ],
)
def test_rule_options_are_validated(rule, message):
    with pytest.raises(ConfigError, match=message):
        load_protocol(protocol([rule], "mlp"))
