"""The rules' mathematics against brute-force and hand-computed references on tiny problems."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurocl.data.tasks import Task, TaskSplit
from neurocl.models import build_model
from neurocl.rules.base import Context
from neurocl.rules.consolidation import EWC, SI, EWCConfig, OnlineEWC, OnlineEWCConfig, SIConfig
from neurocl.rules.magnitude import Magnitude, MagnitudeConfig
from neurocl.training import batch_loss

N_IN, N_OUT = 6, 3


def tiny_mlp(dtype="float64", seed=0):
    return build_model({"kind": "mlp", "n_in": N_IN, "hidden": [5], "n_out": N_OUT, "dtype": dtype}, seed=seed)


def tiny_task(n=12, seed=0, dtype=torch.float64, name="t"):
    g = torch.Generator().manual_seed(seed)
    split = TaskSplit(x=torch.rand(n, 1, N_IN, generator=g, dtype=dtype), y=torch.randint(0, N_OUT, (n,), generator=g))
    return Task(name, list(range(N_OUT)), split, split)


def context(model, tasks, optimizer=None, class_mask=None, seed=0):
    class_mask = class_mask if class_mask is not None else torch.ones(len(tasks), N_OUT, dtype=torch.bool)
    return Context(
        model=model, optimizer=optimizer or torch.optim.SGD(model.parameters(), lr=0.1), tasks=tasks,
        protocol=None, loss_fn=lambda m, b: batch_loss(m, b, class_mask)[:2], class_mask=class_mask,
        log_metric=lambda *a, **k: None, generator=torch.Generator().manual_seed(seed),
    )


def per_example_grads(model, task, objective):
    """Brute force: one gradient per example of ``objective(logits_row, label)``."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for i in range(len(task.train)):
        logits = model(task.train.x[i : i + 1])[:, -1]
        out.append(torch.autograd.grad(objective(logits, task.train.y[i : i + 1]), params))
    return out


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def fisher_of(rule_fisher):
    return flat(list(rule_fisher.values()))


# ---------------------------------------------------------------------------- Fisher
@pytest.mark.parametrize(
    "kind, objective",
    [
        ("empirical", lambda logits, y: F.cross_entropy(logits, y)),
        ("r5", lambda logits, y: F.log_softmax(logits, -1).sum()),
    ],
)
def test_fisher_is_the_mean_of_per_example_squared_gradients(kind, objective):
    model, task = tiny_mlp(), tiny_task()
    ctx = context(model, [task])
    rule = EWC(EWCConfig(fisher=kind))
    rule.setup(ctx)
    fisher = fisher_of(rule.fisher(0, ctx))

    grads = torch.stack([flat(g) for g in per_example_grads(model, task, objective)])
    brute = grads.square().mean(0)
    square_of_mean = grads.mean(0).square()
    torch.testing.assert_close(fisher, brute, rtol=1e-10, atol=1e-14)
    assert not torch.allclose(fisher, square_of_mean, rtol=1e-3), "the Fisher must not be the squared batch gradient"


def test_sampled_fisher_draws_labels_from_the_model():
    """Many draws of y ~ p(y|x) approach the exact Fisher sum_c p_c g_c^2; the true labels do not."""
    model = tiny_mlp()
    base = tiny_task(n=4, seed=1)
    repeats = 600
    split = TaskSplit(x=base.train.x.repeat(repeats, 1, 1), y=base.train.y.repeat(repeats))
    task = Task("rep", list(range(N_OUT)), split, split)
    ctx = context(model, [task])
    rule = EWC(EWCConfig(fisher="sampled"))
    rule.setup(ctx)
    sampled = fisher_of(rule.fisher(0, ctx))

    exact = torch.zeros_like(sampled)
    for c in range(N_OUT):
        with torch.no_grad():
            p_c = F.softmax(model(base.train.x)[:, -1], -1)[:, c]
        label_c = lambda logits, y, c=c: F.cross_entropy(logits, torch.tensor([c]))  # noqa: E731
        for p, g in zip(p_c, per_example_grads(model, base, label_c)):
            exact += p * flat(g).square() / len(base.train)
    empirical = EWC(EWCConfig(fisher="empirical"))
    empirical.setup(ctx)
    true_label = fisher_of(empirical.fisher(0, ctx))
    rel = lambda a: float((a - exact).norm() / exact.norm())  # noqa: E731
    assert rel(sampled) < 0.1, rel(sampled)
    assert rel(true_label) > 3 * rel(sampled)


def test_fisher_respects_the_task_class_mask():
    """Task-incremental masking: an output the task may not use carries no Fisher information."""
    model, task = tiny_mlp(), tiny_task()
    task.train.y.clamp_(max=1)
    mask = torch.tensor([[True, True, False]])
    ctx = context(model, [task], class_mask=mask)
    for kind in ("empirical", "sampled", "r5"):
        rule = EWC(EWCConfig(fisher=kind))
        rule.setup(ctx)
        fisher = rule.fisher(0, ctx)
        out_w, out_b = fisher["layers.2.weight"], fisher["layers.2.bias"]
        assert torch.all(out_w[2] == 0) and out_b[2] == 0, kind
        assert torch.all(out_w[:2].sum(1) > 0), kind


# ---------------------------------------------------------------------------- EWC penalties
def _train_a_little(model, task, steps=5, lr=0.5):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mask = torch.ones(1, N_OUT, dtype=torch.bool)
    from neurocl.rules.base import Batch

    for _ in range(steps):
        b = Batch(x=task.train.x, y=task.train.y, task=torch.zeros(len(task.train), dtype=torch.long))
        loss = batch_loss(model, b, mask)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_ewc_penalty_is_zero_at_the_anchor_and_positive_away_from_it():
    model, task = tiny_mlp(), tiny_task()
    ctx = context(model, [task])
    rule = EWC(EWCConfig(**{"lambda": 3.0}))
    rule.setup(ctx)
    assert rule.penalty(ctx) is None
    rule.end_task(0, ctx)
    assert rule.penalty(ctx).item() == 0.0
    fisher = rule.terms[0]["importance"]["layers.0.weight"]
    i, j = divmod(int(fisher.argmax()), fisher.shape[1])
    with torch.no_grad():
        model.layers[0].weight[i, j] += 0.3
    assert rule.penalty(ctx).item() > 0
    torch.testing.assert_close(rule.penalty(ctx).detach(), 0.5 * 3.0 * fisher[i, j] * 0.3**2, rtol=1e-6, atol=0)


def test_ewc_modes_and_online_ewc_decay():
    """separate: a term per task; merged: F1 + F2; online: gamma F1 + F2, anchored at the end of task 2."""
    model = tiny_mlp()
    tasks = [tiny_task(seed=1, name="a"), tiny_task(seed=2, name="b")]
    ctx = context(model, tasks)
    gamma = 0.3
    separate, merged = EWC(EWCConfig(mode="separate")), EWC(EWCConfig(mode="merged"))
    online = OnlineEWC(OnlineEWCConfig(gamma=gamma))
    rules = (separate, merged, online)
    for r in rules:
        r.setup(ctx)
        r.end_task(0, ctx)
    f1 = {k: v.clone() for k, v in separate.terms[0]["importance"].items()}
    _train_a_little(model, tasks[1])
    for r in rules:
        r.end_task(1, ctx)
    f2 = separate.terms[1]["importance"]
    end = {n: p.detach() for n, p in model.named_parameters()}
    assert len(separate.terms) == 2 and len(merged.terms) == 1 and len(online.terms) == 1
    for n in f1:
        assert not torch.allclose(f1[n], f2[n])
        torch.testing.assert_close(merged.terms[0]["importance"][n], f1[n] + f2[n])
        torch.testing.assert_close(online.terms[0]["importance"][n], gamma * f1[n] + f2[n])
        assert torch.equal(online.terms[0]["anchor"][n], end[n])


# ---------------------------------------------------------------------------- SI
class Quadratic(nn.Module):
    """L(theta) = 0.5 * sum a_i (theta_i - t_i)^2: a toy whose SGD path is known in closed form."""

    def __init__(self, theta0, a, target):
        super().__init__()
        self.theta = nn.Parameter(theta0.clone())
        self.a, self.target = a, target

    def loss(self):
        return 0.5 * (self.a * (self.theta - self.target).square()).sum()


def _si_rule(model, xi=1e-3, c=1.0):
    rule = SI(SIConfig(c=c, xi=xi))
    ctx = Context(model=model, optimizer=None, tasks=[], protocol=None, loss_fn=None, class_mask=None,
                  log_metric=None, generator=torch.Generator())
    rule.setup(ctx)
    return rule, ctx


def test_si_omega_equals_the_path_integral_on_a_quadratic_with_sgd():
    theta0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    a = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    target = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    lr, steps, xi = 0.1, 7, 1e-3
    model = Quadratic(theta0, a, target)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rule, ctx = _si_rule(model, xi=xi)
    rule.start_task(0, ctx)
    for _ in range(steps):
        opt.zero_grad()
        model.loss().backward()
        rule.after_task_backward(ctx)
        rule.before_step(ctx)
        opt.step()
        rule.after_step(ctx)
    rule.settle(ctx)  # the last step's change is counted at the next step or the end of the task
    omega = rule.omega["theta"].clone()
    rule.end_task(0, ctx)

    # theta_k - t = (1 - lr a)^k (theta_0 - t); g_k = a (theta_k - t); delta_k = -lr g_k.
    k = torch.arange(steps, dtype=torch.float64)[:, None]
    g = a * (1 - lr * a) ** k * (theta0 - target)
    hand_omega = (lr * g.square()).sum(0)
    big_delta = ((1 - lr * a) ** steps - 1) * (theta0 - target)
    torch.testing.assert_close(omega, hand_omega, rtol=1e-12, atol=0)
    torch.testing.assert_close(rule.terms[0]["importance"]["theta"], hand_omega / (big_delta.square() + xi))
    torch.testing.assert_close(rule.terms[0]["anchor"]["theta"], model.theta.detach())


def test_si_path_integral_uses_the_unregularised_gradient_and_the_actual_change():
    """On a second task the penalty moves theta too; omega counts -g_task * delta only."""
    a = torch.tensor([1.0, 3.0], dtype=torch.float64)
    model = Quadratic(torch.tensor([2.0, -1.0], dtype=torch.float64), a, torch.zeros(2, dtype=torch.float64))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rule, ctx = _si_rule(model, c=0.7)
    for task, target in enumerate([torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0])]):
        model.target = target.double()
        rule.start_task(task, ctx)
        hand = torch.zeros(2, dtype=torch.float64)
        for _ in range(5):
            opt.zero_grad()
            task_loss = model.loss()
            task_loss.backward()  # as the runner: the task gradient first
            g_task = model.theta.grad.clone()
            rule.after_task_backward(ctx)
            pen = rule.penalty(ctx)
            if pen is not None:
                pen.backward()
            before = model.theta.detach().clone()
            rule.before_step(ctx)
            opt.step()
            rule.after_step(ctx)
            hand -= g_task * (model.theta.detach() - before)
        rule.settle(ctx)
        omega = rule.omega["theta"].clone()
        rule.end_task(task, ctx)
        torch.testing.assert_close(omega, hand, rtol=1e-12, atol=1e-15)
    assert len(rule.terms) == 1


# ---------------------------------------------------------------------------- magnitude rule
def _grads(model, seed=0):
    x = torch.rand(8, 1, N_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    model.zero_grad()
    (model(x)[:, -1] ** 2).sum().backward()


def _formula(w, kappa, beta, eta_0):
    return eta_0 * (1 - kappa * torch.tanh(beta * w.abs()))


def test_magnitude_step_equals_the_formula_under_sgd():
    kappa, beta, eta_0, lr = 0.8, 5.0, 0.9, 0.1
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rule = Magnitude(MagnitudeConfig(kappa=kappa, beta=beta, eta_0=eta_0))
    ctx = context(model, [], optimizer=opt)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _grads(model)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    rule.before_step(ctx)
    opt.step()
    rule.after_step(ctx)
    for n, p in model.named_parameters():
        if n.endswith("weight"):
            expected = before[n] - lr * _formula(before[n], kappa, beta, eta_0) * grads[n]
        else:  # biases are excluded by default: a plain SGD step
            expected = before[n] - lr * grads[n]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-15)
        if n.endswith("weight"):
            assert not torch.allclose(p.detach(), before[n] - lr * grads[n], rtol=1e-6), "the rule changed nothing"


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd-momentum"])
@pytest.mark.parametrize("include_biases", [False, True])
def test_magnitude_scales_the_optimisers_own_step(optimizer, include_biases):
    """Each step equals theta + scale * (reference step - theta), and the moments are the reference's."""
    kappa, beta = 0.7, 5.0
    make = {
        "adam": lambda ps: torch.optim.Adam(ps, lr=0.05),
        "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=0.01),
        "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    }[optimizer]
    model = tiny_mlp()
    opt = make(model.parameters())
    rule = Magnitude(MagnitudeConfig(kappa=kappa, beta=beta, include_biases=include_biases))
    ctx = context(model, [], optimizer=opt)
    for step in range(3):
        _grads(model, seed=step)
        ref_model = copy.deepcopy(model)
        ref_opt = make(ref_model.parameters())
        ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # not shared: step() updates in place
        for p, q in zip(model.parameters(), ref_model.parameters()):
            q.grad = p.grad.clone()
        ref_opt.step()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        rule.before_step(ctx)
        opt.step()
        rule.after_step(ctx)
        for (n, p), q in zip(model.named_parameters(), ref_model.parameters()):
            scaled = include_biases or n.endswith("weight")
            scale = _formula(before[n], kappa, beta, 1.0) if scaled else 1.0
            torch.testing.assert_close(p.detach(), before[n] + scale * (q.detach() - before[n]), rtol=1e-12, atol=1e-15)
        for s, r in zip(opt.state_dict()["state"].values(), ref_opt.state_dict()["state"].values()):
            for key in s:
                torch.testing.assert_close(s[key], r[key], rtol=0, atol=0)


def test_paper_variant_is_a_plain_gradient_step_that_ignores_the_optimiser():
    model = tiny_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rule = Magnitude(MagnitudeConfig(paper_variant=True))
    ctx = context(model, [], optimizer=opt)
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    _grads(model)
    _grads(ref)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    rule.before_step(ctx)
    opt.step()
    rule.after_step(ctx)
    ref_opt.step()
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        if n.endswith("weight"):  # the thesis: w <- w - (1 - tanh(5|w|)) g
            expected = before[n] - (1 - torch.tanh(5 * before[n].abs())) * grads[n]
        else:  # biases: Adam
            expected = q.detach()
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-15)


def _ei_net():
    return build_model(
        {"preset": "ei-rnn-64", "n_in": 8, "n": 20, "n_out": 4, "tau": 2.0, "p_connect": 0.7, "plastic_fraction": 0.6,
         "w_in_range": [0.0, 0.5], "w_out_range": [0.0, 0.5], "omega_lambda": 0.0}, seed=2)


@pytest.mark.parametrize("magnitude_of", ["raw", "effective"])
def test_magnitude_rule_keeps_the_ei_network_constraints(magnitude_of):
    model = _ei_net()
    init_raw = model.W_rec.detach().clone()
    init_eff = model.effective_weights()["W_rec"].detach().clone()
    fixed = (model.plastic_mask == 0)
    absent = model.connectivity_mask == 0
    assert fixed.any() and (fixed & ~absent).any()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    rule = Magnitude(MagnitudeConfig(kappa=1.0, magnitude_of=magnitude_of, include_biases=True))
    ctx = context(model, [], optimizer=opt)
    x = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(0))
    for step in range(10):
        opt.zero_grad()
        model(x, noise=False)[:, -1].square().sum().mul(-1).backward()
        with torch.no_grad():  # as if something pushed the fixed and absent entries too
            model.W_rec.grad[fixed] = 1.0
        rule.before_step(ctx)
        opt.step()
        rule.after_step(ctx)
        assert model.check_constraints() == [], step
        assert torch.equal(model.W_rec.detach()[fixed], init_raw[fixed])
        w = model.effective_weights()["W_rec"].detach()
        assert torch.equal(w[fixed], init_eff[fixed]) and torch.all(w[absent] == 0)
    assert not torch.equal(model.W_rec.detach()[~fixed], init_raw[~fixed])


def test_magnitude_of_effective_reads_the_effective_weight():
    """A raw E/I weight below zero is effectively 0: 'effective' gives it the full step, 'raw' does not."""
    steps = {}
    for magnitude_of in ("raw", "effective"):
        model = _ei_net()
        with torch.no_grad():
            model.W_rec.mul_(-1.0)  # every plastic synapse rectified away: effective weight 0
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        rule = Magnitude(MagnitudeConfig(kappa=1.0, magnitude_of=magnitude_of))
        ctx = context(model, [], optimizer=opt)
        model.W_rec.grad = torch.ones_like(model.W_rec)
        before = model.W_rec.detach().clone()
        rule.before_step(ctx)
        opt.step()
        rule.after_step(ctx)
        steps[magnitude_of] = before - model.W_rec.detach()
    plastic = _ei_net().plastic_mask > 0
    torch.testing.assert_close(steps["effective"][plastic], torch.full_like(steps["effective"][plastic], 0.1))
    raw_scale = 1 - torch.tanh(5 * _ei_net().W_rec.detach().abs())
    torch.testing.assert_close(steps["raw"][plastic], 0.1 * raw_scale[plastic])


def test_si_importance_is_clipped_at_zero():
    """A negative path integral (the loss rose along the path) gives no importance, not a negative one."""
    model = Quadratic(torch.tensor([1.0, 1.0], dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                      torch.zeros(2, dtype=torch.float64))
    rule, ctx = _si_rule(model)
    rule.start_task(0, ctx)
    with torch.no_grad():
        model.theta.add_(torch.tensor([0.5, 0.5], dtype=torch.float64))
    rule.omega["theta"] = torch.tensor([-2.0, 3.0], dtype=torch.float64)
    rule.end_task(0, ctx)
    importance = rule.terms[0]["importance"]["theta"]
    assert importance[0] == 0
    torch.testing.assert_close(importance[1], torch.tensor(3.0 / (0.25 + 1e-3), dtype=torch.float64))
