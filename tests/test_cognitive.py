"""Cognitive tasks from NeuroGym: seeded trials, the shared layout, masks, training, psychometrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("neurogym")

from neurocl.analysis.psychometric import (  # noqa: E402
    curve_from_choices,
    fit_logistic,
    model_after_task,
    psychometric_curve,
)
from neurocl.config import ConfigError  # noqa: E402
from neurocl.data.cognitive import build_cognitive_tasks  # noqa: E402
from neurocl.protocol import load_protocol  # noqa: E402
from neurocl.data.sequence import build_tasks  # noqa: E402
from neurocl.run import load_run, run_protocol  # noqa: E402

PDM = {"env": "PerceptualDecisionMaking",
       "env_kwargs": {"dt": 100, "timing": {"fixation": 200, "stimulus": 600, "decision": 200}}}
GONOGO = {"env": "GoNogo",
          "env_kwargs": {"dt": 100, "timing": {"fixation": 200, "stimulus": 300, "delay": 300, "decision": 300}}}
# A random delay, so trials differ in length and the shorter ones are padded.
CTX = {"env": "ContextDecisionMaking",
       "env_kwargs": {"dt": 100, "timing": {"fixation": 200, "stimulus": 400, "delay": ["choice", [100, 300, 500]],
                                            "decision": 200}}}


def protocol(tasks, n_in, seed=0, **extra):
    p = {
        "name": "cog-test",
        "dataset": {"name": "cognitive", "max_train": 48, "max_test": 40},
        "scenario": "domain-incremental",
        "tasks": tasks,
        "model": {"preset": "ei-rnn-64", "n": 32, "n_in": n_in, "n_out": 3, "output": "all",
                  "dt": 100.0, "tau": 1000.0, "omega_lambda": 0.0, "backend": "torch"},
        "rules": ["naive"],
        "seed": seed,
        "recording": {"weight_stats": False},
        "execution": {"progress": "none"},
    }
    p.update(extra)
    return p


def three_tasks(seed=0):
    # n_in = fixation 1 + PDM 2 + GoNogo 2 + ContextDM 4 + 3 rule inputs
    return load_protocol(protocol([PDM, GONOGO, CTX], n_in=12, seed=seed))


@pytest.fixture(scope="module")
def built():
    return build_cognitive_tasks(three_tasks(seed=0))[0]


def test_same_seed_gives_bit_identical_trials_and_another_seed_other_trials(built):
    again = build_cognitive_tasks(three_tasks(seed=0))[0]
    other = build_cognitive_tasks(three_tasks(seed=1))[0]
    for a, b, c in zip(built, again, other):
        for split in ("train", "test"):
            sa, sb, sc = getattr(a, split), getattr(b, split), getattr(c, split)
            assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y) and torch.equal(sa.mask, sb.mask)
            assert not torch.equal(sa.x, sc.x)
    # Train and test trials come from independent streams.
    assert not torch.equal(built[0].train.x[:40], built[0].test.x)


def test_per_step_targets_and_masks_have_the_right_shapes_and_padding_is_masked(built):
    steps = built[0].n_steps
    for task in built:
        assert task.n_steps == steps  # one T for the whole protocol
        for split in (task.train, task.test):
            n = len(split)
            assert split.y.shape == (n, steps) and split.y.dtype == torch.int64
            assert split.mask.shape == (n, steps) and split.mask.dtype == torch.float32
        info = task.meta["test_trials"]
        t = torch.arange(steps)
        padding = t[None, :] >= info["length"][:, None]
        response = (t[None, :] >= info["response_start"][:, None]) & (t[None, :] < info["response_end"][:, None])
        assert torch.all(task.test.mask[padding] == 0) and torch.all(task.test.x[padding] == 0)
        # Test accuracy counts the response period only; the loss weights it 10 to 1.
        assert torch.equal(task.test.mask > 0, response)
        train_info = task.meta["train_trials"]
        tr_resp = (t[None, :] >= train_info["response_start"][:, None]) & (t[None, :] < train_info["response_end"][:, None])
        assert torch.all(task.train.mask[tr_resp] == 10.0)
        live = t[None, :] < train_info["length"][:, None]
        assert torch.all(task.train.mask[live & ~tr_resp] == 1.0) and torch.all(task.train.mask[~live] == 0)
    ctx = built[2].meta["test_trials"]["length"]
    assert ctx.min() < ctx.max() == steps  # random delays: some trials were padded


def test_targets_use_the_shared_output_head(built):
    pdm, gonogo, ctx = built
    assert pdm.classes == [0, 1, 2] and gonogo.classes == [0, 1] and ctx.classes == [0, 1, 2]
    for task in built:
        resp = task.test.mask > 0
        assert torch.all(task.test.y[~resp & (task.test.x.sum(-1) > 0)] == 0)  # fixate outside the response
        # The response-period target is the trial's correct response, stored per trial.
        first = task.meta["test_trials"]["response_start"]
        assert torch.equal(task.test.y[torch.arange(len(first)), first], task.test.labels_orig)
    # Go/no-go: go trials want output 1 in the response period, no-go trials keep fixating.
    gt = gonogo.meta["test_trials"]["ground_truth"].long()
    assert set(gonogo.test.labels_orig.tolist()) == {0, 1} and torch.equal(gonogo.test.labels_orig, gt)


def test_inputs_are_non_negative_and_each_task_uses_its_slot_and_rule(built):
    slots = built[0].meta["layout"]
    assert slots["rule"] == [9, 10, 11]
    for i, task in enumerate(built):
        for split in (task.train, task.test):
            assert split.x.min() >= 0
            live = split.mask > 0
            rule = split.x[..., 9:12]
            assert torch.all(rule[live][:, i] == 1) and torch.all(rule[..., [j for j in range(3) if j != i]] == 0)
            own = slots[task.meta["env"]]
            others = [c for c in range(1, 9) if c not in own]
            assert torch.all(split.x[..., others] == 0) and split.x[..., own].sum() > 0


def test_negative_observations_are_rectified_and_counted():
    noisy = {"env": "PerceptualDecisionMaking", "env_kwargs": {**PDM["env_kwargs"], "sigma": 5.0}}
    task = build_tasks(load_protocol(protocol([noisy], n_in=4)))[0][0]
    assert task.meta["splits"]["train"]["clipped_fraction"] > 0.05  # noise std 0.5 around 0.5
    assert task.train.x.min() == 0 and task.test.x.min() == 0


def test_tasks_of_one_env_share_its_stimulus_inputs():
    ctx2 = {"env": "ContextDecisionMaking", "env_kwargs": {**CTX["env_kwargs"], "impl_context_modality": 1}}
    p = load_protocol(protocol([CTX, ctx2], n_in=1 + 4 + 2))
    tasks, desc = build_tasks(p)
    assert tasks[0].meta["layout"]["ContextDecisionMaking-v0"] == [1, 2, 3, 4]
    assert tasks[0].meta["rule_input"] == 5 and tasks[1].meta["rule_input"] == 6
    assert "ContextDecisionMaking-v0" in desc and "neurogym" in desc


def test_protocol_checks_report_cognitive_mistakes():
    with pytest.raises(ConfigError) as err:
        load_protocol(protocol([PDM, {"env": "PerceptualDecisionMakin"}, {"env": "GoNogo", "classes": [0, 1]}], n_in=5))
    text = str(err.value)
    assert "did you mean 'PerceptualDecisionMaking" in text
    assert "tasks.2.classes" in text
    with pytest.raises(ConfigError, match=r"model.n_in: the model takes 5 inputs but .* layout has 4"):
        load_protocol(protocol([PDM], n_in=5))
    slow = {"env": "GoNogo", "env_kwargs": {"dt": 50}}
    with pytest.raises(ConfigError, match="share one time step"):
        load_protocol(protocol([PDM, slow], n_in=7))


def test_logistic_fit_recovers_a_known_slope_and_bias():
    rng = np.random.default_rng(0)
    levels = np.array([-51.2, -25.6, -12.8, -6.4, 0, 6.4, 12.8, 25.6, 51.2])
    c = np.repeat(levels, 2000)
    slope, bias = 0.12, 3.0
    chose_right = rng.random(c.size) < 1 / (1 + np.exp(-slope * (c - bias)))
    fit = fit_logistic(c, chose_right)
    assert fit.slope == pytest.approx(slope, rel=0.08)
    assert fit.bias == pytest.approx(bias, abs=0.8)
    curve = curve_from_choices(c, chose_right)
    assert np.all(np.diff(curve.p_right) > 0) and curve.n.sum() == c.size
    # A flat observer (coin flips) has a slope near zero.
    assert abs(fit_logistic(c, rng.random(c.size) < 0.5).slope) < 0.01


def test_ei_network_learns_the_decision_task_through_the_runner(tmp_path):
    p = protocol(
        [PDM], n_in=4,
        dataset={"name": "cognitive", "max_train": 512, "max_test": 400},
        training={"epochs": 40, "batch_size": 32, "optimizer": {"lr": 0.01}, "grad_clip": 1.0},
    )
    rd = run_protocol(p, tmp_path)
    summary = load_run(rd.path)["summary"]
    untrained, trained = summary["untrained_accuracy"][0], summary["accuracy_matrix"][0][0]
    # Masked-step accuracy = correct outputs in the response period. Untrained: 0 to 0.54 over
    # seeds 0-5 (always fixate, or always one side); trained: 0.82 to 0.88 (an ideal observer
    # of these stimuli gets about 0.87), so a margin of 0.2 over chance is far from the edge.
    assert trained >= max(untrained, 0.5) + 0.2, (untrained, trained)
    task = build_tasks(load_protocol(p))[0][0]
    curve = psychometric_curve(model_after_task(rd.path, 0), task, seed=0)
    assert curve.coherence[0] == -51.2 and curve.coherence[-1] == 51.2
    assert curve.p_right[0] < 0.1 and curve.p_right[-1] > 0.9
    assert np.all(np.diff(curve.p_right) > -0.1)  # monotone up to sampling noise
    assert curve.fit.slope > 0.1 and abs(curve.fit.bias) < 12.8  # seeds 0-5: 0.28-0.37, |bias| < 8
    # The same from the command line: neurocl analyse psychometric RUN (one task: one curve).
    from click.testing import CliRunner

    from neurocl.cli import main

    res = CliRunner().invoke(main, ["analyse", "psychometric", str(rd.path), "--figure", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"after {task.name}: slope {curve.fit.slope:.3f} /%") and (tmp_path / "p.png").is_file()


def test_shipped_cognitive_protocols_load_and_differ_only_in_their_rule():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "protocols"
    base = load_protocol(root / "cognitive-sequence.yaml")
    assert len(base.tasks) >= 4 and [r.name for r in base.rules] == ["naive"]
    envs = {t.env for t in base.tasks}
    assert {"PerceptualDecisionMaking", "GoNogo", "ContextDecisionMaking"} <= envs
    strip = lambda p: {k: v for k, v in p.model_dump(mode="json").items() if k not in ("name", "description", "rules")}  # noqa: E731
    variants = sorted(root.glob("cognitive-sequence-*.yaml"))
    assert {v.stem.split("-")[-1] for v in variants} >= {"ewc", "si", "magnitude", "replay"}
    for path in variants:
        proto = load_protocol(path)
        assert strip(proto) == strip(base), path.name
        assert [r.name for r in proto.rules] == [path.stem.split("-")[-1]]


def test_a_task_of_your_own_is_an_env_by_import_path(tmp_path):
    """env: module:Class takes a TrialEnv subclass nobody registered; example_trials shows its
    trials as a protocol's task sees them; mistakes name the env and what is wrong."""
    from neurocl.data.cognitive import example_trials
    from neurocl.data.errors import DataError

    t = example_trials("custom_envs:LeftRight", {"dt": 100}, n=4, seed=1)
    for ob, gt, (start, end), info in zip(t.ob, t.gt, t.response, t.info):
        assert ob.shape == (7, 3) and list(gt[:5]) == [0] * 5 and set(gt[5:]) == {info["ground_truth"]}
        assert (start, end) == (5, 7) and ob[2, info["ground_truth"]] == 1 and ob[6, 0] == 0
    assert [i["ground_truth"] for i in example_trials("custom_envs:LeftRight", n=4, seed=1).info] == \
        [i["ground_truth"] for i in t.info]  # seeded
    p = tmp_path / "own.yaml"
    p.write_text("name: own\ndataset: {name: cognitive, max_train: 64, max_test: 32}\n"
                 "tasks: [{env: 'custom_envs:LeftRight', env_kwargs: {dt: 100}}]\n"
                 "model: {preset: ei-rnn-64, n_in: 4, output: all, dt: 100, tau: 200}\n"
                 "training: {epochs: 1}\nexecution: {progress: none}\n")
    rd = run_protocol(p, tmp_path / "out")
    assert load_run(rd.path)["summary"]["task_names"] == ["LeftRight"]
    for env, message in (("custom_envs:NotATask", "NotATask is not a subclass of neurogym.TrialEnv"),
                         ("custom_envs:Missing", "custom_envs has no Missing"),
                         ("no_such_module:Env", "cannot import no_such_module")):
        with pytest.raises(DataError, match=message):
            example_trials(env)
