"""The fused numba training step (FusedLoss): the runner's loss, Omega and gradients in one call.

``training.batch_loss`` takes the fused path for the E/I network on the numba backend; these
tests hold it to the torch backend (no noise: the backends draw different normals) and to the
unfused numba path (same kernel noise), for every loss the runner builds: last-step labels
with class masks and example weights, soft targets (distillation), per-step targets with masks.
"""

import pytest
import torch

import neurocl
import neurocl.rules  # noqa: F401  (registers the rules that training imports)
from neurocl.rules.base import Batch
from neurocl.training import batch_loss
from test_train_kernel import ALL_TRAINABLE, CASES, RTOL, _assert_close

BATCH, STEPS = 7, 10


def _model(case: dict, dtype: str, backend: str, noise: bool, seed: int = 5):
    kw = dict(n_in=7, dtype=dtype, trainable=ALL_TRAINABLE, backend=backend,
              sigma_rec=0.05 if noise else 0.0, sigma_in=0.05 if noise else 0.0)
    kw.update(case)
    model = neurocl.build_model("ei-rnn-64", seed=seed, **kw)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        model.b_rec.copy_(torch.rand(model.b_rec.shape, generator=g, dtype=torch.float64) * 0.2 - 0.1)
        model.b_out.copy_(torch.rand(model.b_out.shape, generator=g, dtype=torch.float64) * 0.2 - 0.1)
    return model


def _batch(model, soft: bool, seed: int = 1) -> tuple[Batch, torch.Tensor]:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(BATCH, STEPS, c.n_in, generator=g, dtype=torch.float64).to(model.W_rec.dtype)
    task = torch.tensor([0, 1] * (BATCH // 2) + [0] * (BATCH % 2))
    weight = torch.rand(BATCH, generator=g)
    weight = weight / weight.sum()
    if c.output == "all":
        y = torch.randint(0, c.n_out, (BATCH, STEPS), generator=g)
        mask = (torch.rand(BATCH, STEPS, generator=g) < 0.6).float()
        batch = Batch(x=u, y=y, task=task, mask=mask, weight=weight)
    else:
        y = torch.randint(0, c.n_out, (BATCH,), generator=g)
        batch = Batch(x=u, y=y, task=task, weight=weight)
        if soft:
            logits = torch.randn(BATCH, c.n_out, generator=g)
            batch = batch.replace(soft=torch.softmax(logits, -1), soft_valid=torch.arange(BATCH) % 3 == 0)
    # Two tasks' class masks (task-incremental style): each row may predict only its task's classes.
    class_mask = torch.zeros(2, c.n_out, dtype=torch.bool)
    class_mask[0, : c.n_out // 2 + 1] = True
    class_mask[1, c.n_out // 2 - 1 :] = True
    return batch, class_mask


def _step(model, batch, class_mask, seed=11):
    """One runner step's loss, regulariser and gradients (noise seeded identically)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, z, states = batch_loss(model, batch, class_mask)
    reg = model.regulariser(loss, states)
    (loss + reg).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), reg.detach(), z.detach(), states, grads


def _compare(a, b, rtol):
    la, ra, za, _, ga = a
    lb, rb, zb, _, gb = b
    _assert_close(la, lb, rtol, "loss")
    _assert_close(za, zb, rtol, "z")
    if rb.item() != 0:
        _assert_close(ra, rb, rtol, "Omega")
    else:
        assert ra.item() == 0
    assert sorted(ga) == sorted(gb)
    for name in gb:
        _assert_close(ga[name], gb[name], rtol, f"grad {name}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_fused_step_agrees_with_the_torch_backend(name, dtype):
    ref = _model(CASES[name], dtype, "torch", noise=False)
    fused = _model(CASES[name], dtype, "numba", noise=False)
    batch, class_mask = _batch(ref, soft=True)
    out_ref = _step(ref, batch, class_mask)
    out_fused = _step(fused, batch, class_mask)
    assert "omega" in out_fused[3] and "x" not in out_fused[3]  # the fused path ran
    assert "x" in out_ref[3]
    _compare(out_fused, out_ref, RTOL[dtype])


@pytest.mark.parametrize("name", ["r1-like", "tanh-abs-sparse", "all-steps-masked"])
def test_fused_step_agrees_with_the_unfused_kernels_with_noise(name):
    model = _model(CASES[name], "float64", "numba", noise=True)
    batch, class_mask = _batch(model, soft=False)
    model.use_fused_loss = False
    unfused = _step(model, batch, class_mask)
    assert "x" in unfused[3]
    model.use_fused_loss = True
    fused = _step(model, batch, class_mask)
    _compare(fused, unfused, 1e-10)


@pytest.mark.parametrize("name", ["r1-like", "softplus-exc-readout"])
def test_separate_backward_passes_add_up(name):
    """SI backpropagates the task loss and the penalties separately: the sum must not change."""
    model = _model(CASES[name], "float64", "numba", noise=True)
    batch, class_mask = _batch(model, soft=False)
    combined = _step(model, batch, class_mask)[4]
    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    loss, _, states = batch_loss(model, batch, class_mask)
    reg = model.regulariser(loss, states)
    loss.backward(retain_graph=True)
    task_only = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    (0.5 * reg).backward()
    reg_half = {n: p.grad - task_only.get(n, 0) for n, p in model.named_parameters() if p.grad is not None}
    for n in combined:
        _assert_close(task_only[n] + 2 * reg_half[n], combined[n], 1e-10, n)
    assert any(reg_half[n].abs().max() > 0 for n in reg_half)  # Omega contributed


def test_constraints_hold_after_fused_adam_steps():
    """Signs, absent and fixed synapses after every Adam step taken through the fused path."""
    model = _model(CASES["r1-like"], "float32", "numba", noise=True)
    model.W_rec.requires_grad_(True)
    batch, class_mask = _batch(model, soft=False)
    fixed = model.effective_weights()["W_rec"].detach()[model.plastic_mask == 0].clone()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    before = model.W_rec.detach().clone()
    for step in range(15):
        opt.zero_grad()
        loss, _, states = batch_loss(model, batch, class_mask)
        (loss + model.regulariser(loss, states)).backward()
        opt.step()
        assert model.check_constraints() == [], step
        now = model.effective_weights()["W_rec"].detach()[model.plastic_mask == 0]
        assert torch.equal(now, fixed), step
    assert not torch.equal(model.W_rec.detach(), before)  # training moved the plastic weights


def test_no_fused_path_without_gradients_or_on_request():
    model = _model(CASES["r1-like"], "float32", "numba", noise=False)
    batch, class_mask = _batch(model, soft=False)
    with torch.no_grad():
        _, _, states = batch_loss(model, batch, class_mask)
    assert "x" in states
    model.use_fused_loss = False
    assert "x" in batch_loss(model, batch, class_mask)[2]
    torch_model = _model(CASES["r1-like"], "float32", "torch", noise=False)
    assert "x" in batch_loss(torch_model, batch, class_mask)[2]
