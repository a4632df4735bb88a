"""The adding problem (Li et al. 2023's reference check): ColEI vs a standard RNN vs DANN.

Each sequence has two input channels over ``--length`` steps: values uniform in [0, 1] and a
marker channel that is 1 at exactly two steps (one drawn in the first half of the sequence, one
in the second) and 0 elsewhere. The target is the sum of the two marked values (in [0, 2]; always
predicting its mean 1 scores an MSE of 1/6 = 0.167). The regression readout is the model's output
(``n_out = 1``) at the last step; the loss is the mean squared error.

All three networks are neurocl's E/I network class (``EIRNN``; the forward pass reads its weights
from ``effective_weights``), 10 state units, ReLU, no noise, x0 = 0 (not trained), biases trained:

* ``colei``: ``dale: colei`` with 9 E : 1 I, Li et al.'s ColEI recipe (exponential magnitudes,
  rows balanced in expectation, zero diagonal, spectral radius 1.5:
  ``neurocl.analysis.trainability.colei_li_init``) written into the raw recurrent parameter, input
  magnitudes ~ Exponential(1 / sqrt(n_in)) (Li et al.'s first-layer ColEI input init); the readout
  keeps neurocl's init (U(0, 0.2) magnitudes, column signs).
* ``rnn``: ``constraint: unconstrained`` (the existing ablation without Dale's law), self
  connections allowed, every weight ~ U(-1/sqrt(n), 1/sqrt(n)) (PyTorch's RNN / Linear init, Li
  et al.'s standard RNN), biases 0.
* ``dann``: ``dale: dann, init: dann`` (one interneuron per pathway: max(1, 10 // 10)), self
  connections allowed; ``--csgd`` switches on ``dann.csgd``; ``--csgd-mode lr`` leaves it off and
  divides the learning rates of the interneuron factors by the same divisors instead (one
  parameter group each; the experiment behind "cSGD under Adam" in docs/dale.md).

Training as Li et al.'s exps/adding.py: SGD lr 0.1, batch 64, gradient-norm clip ColEI 7 / RNN 7 /
DANN 3, per parameter tensor for ColEI and the RNN (their ``ColumnEiSGD_Clip``) and over all
parameters for DANN (their ``ClipGradNorm_Mixin``). a = dt / tau = 1 is the discrete RNN of the
paper; ``--tau 10`` (a = 0.1) shows the effect of a leak. cSGD runs through the same
``neurocl.training.prepare_gradients`` as the runner (before the clip).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/adding_problem.py          # the table
    python benchmarks/adding_problem.py --tau 10 --networks colei rnn dann
    python benchmarks/adding_problem.py --networks dann --optimizer adam --lr 0.001 --csgd

Prints one Markdown table (mean +- sd of the final test MSE over seeds, and each seed's value);
``--csv FILE`` also writes one row per run.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CLIP = {"colei": 7.0, "rnn": 7.0, "dann": 3.0}
CLIP_MODE = {"colei": "per-tensor", "rnn": "per-tensor", "dann": "global"}
LABEL = {"colei": "ColEI (9:1, Li et al. init)", "rnn": "standard RNN (unconstrained)", "dann": "DANN"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", nargs="+", choices=list(CLIP), default=["dann", "rnn", "colei"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--length", type=int, default=20, help="steps per sequence")
    p.add_argument("--train", type=int, default=9000, help="training sequences")
    p.add_argument("--test", type=int, default=1000, help="test sequences")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n", type=int, default=10, help="state units")
    p.add_argument("--tau", type=float, default=1.0, help="tau with dt = 1: a = 1 / tau")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--clip", choices=["paper", "global", "per-tensor", "none"], default="paper",
                   help="paper: per tensor for ColEI and RNN, over all parameters for DANN")
    p.add_argument("--csgd", action="store_true", help="dann.csgd: true for the DANN")
    p.add_argument("--csgd-mode", choices=["gradient", "lr"], default="gradient")
    p.add_argument("--phi", choices=["rectify", "abs"], default="rectify", help="ColEI's and DANN's phi")
    p.add_argument("--backend", choices=["auto", "torch", "numba"], default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--csv", type=str, default=None, help="also write one row per run here")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, str(ARGS.threads))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from neurocl.analysis.trainability import colei_li_init  # noqa: E402
from neurocl.sim.config import EIRNNConfig  # noqa: E402
from neurocl.sim.csgd import csgd_divisors  # noqa: E402
from neurocl.sim.ei_rnn import EIRNN  # noqa: E402
from neurocl.training import prepare_gradients  # noqa: E402


# ----------------------------------------------------------------------------- the data
def adding_problem(count: int, length: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` sequences (count, length, 2) and their targets (count,): channel 0 holds values
    uniform in [0, 1], channel 1 is 1 at one step of the first half and one of the second half;
    the target is the sum of the two marked values."""
    if length < 2:
        raise ValueError("the adding problem needs at least 2 steps")
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, size=(count, length))
    half = length // 2
    first = rng.integers(0, half, size=count)
    second = rng.integers(half, length, size=count)
    markers = np.zeros((count, length))
    rows = np.arange(count)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1)
    y = values[rows, first] + values[rows, second]
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)


# ----------------------------------------------------------------------------- the networks
def build(network: str, seed: int, n: int = 10, tau: float = 1.0, phi: str = "rectify", csgd: bool = False,
          backend: str = "auto") -> EIRNN:
    common = dict(n_in=2, n=n, n_out=1, dt=1.0, tau=tau, sigma_rec=0.0, sigma_in=0.0, activation="rectify",
                  x0_init=0.0, omega_lambda=0.0, backend=backend, output="last",
                  trainable={"W_in": True, "W_rec": True, "W_out": True, "b_rec": True, "b_out": True, "x0": False})
    if network == "colei":
        cfg = EIRNNConfig(**common, constraint="dale", dale="colei", e_fraction=0.9, phi=phi, readout="all")
    elif network == "rnn":
        cfg = EIRNNConfig(**common, constraint="unconstrained", self_connections=True, init="normal",
                          w_in_range=(-1.0, 1.0), w_out_range=(-1.0, 1.0))
    elif network == "dann":
        cfg = EIRNNConfig(**common, constraint="dale", dale="dann", init="dann", phi=phi, self_connections=True,
                          dann={"csgd": csgd})
    else:
        raise ValueError(network)
    model = EIRNN(cfg, seed=seed)
    model.noise = False
    rng = np.random.default_rng(10_000 + seed)
    with torch.no_grad():
        if network == "colei":
            w = colei_li_init(n, i_fraction=0.1, radius=1.5, seed=seed)
            n_e = int((model.sign > 0).sum())
            assert np.all(w[:, :n_e] >= 0) and np.all(w[:, n_e:] <= 0), "E/I columns differ from Li et al.'s"
            model.W_rec.copy_(torch.as_tensor(np.abs(w)) * model.plastic_mask)
            model.W_in.copy_(torch.as_tensor(rng.exponential(1 / math.sqrt(2), size=(n, 2))))
        elif network == "rnn":
            bound = 1 / math.sqrt(n)
            model.W_rec.copy_(torch.as_tensor(rng.uniform(-bound, bound, size=(n, n))) * model.plastic_mask)
            model.W_in.copy_(torch.as_tensor(rng.uniform(-bound, bound, size=(n, 2))))
            model.W_out.copy_(torch.as_tensor(rng.uniform(-bound, bound, size=(1, n))))
    assert not model.check_constraints(), model.check_constraints()
    return model


def lr_groups(model: EIRNN, params: list[torch.Tensor], lr: float) -> list[dict]:
    """The cSGD divisors as learning rates: each interneuron factor in its own group at
    lr / divisor, everything else at lr."""
    divisors = csgd_divisors(model.config)
    names = {id(p): name for name, p in model.named_parameters()}
    groups = [{"params": [p for p in params if names[id(p)] not in divisors]}]
    groups += [{"params": [p], "lr": lr / divisors[names[id(p)]]} for p in params if names[id(p)] in divisors]
    return groups


def clip_gradients(params, max_norm: float | None, mode: str) -> None:
    if max_norm is None or mode == "none":
        return
    if mode == "per-tensor":
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], max_norm)
    else:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def predict(model: EIRNN, x: torch.Tensor) -> torch.Tensor:
    return model(x)[:, -1, 0]


def mse_loss(model: EIRNN, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    def loss_of_z(z):
        return ((z[:, -1, 0] - y) ** 2).mean()

    fused = model.fused_loss(x, loss_of_z)  # the numba training kernel when the backend is numba
    if fused is not None:
        return fused[0]
    return loss_of_z(model(x))


def train_one(network: str, seed: int, args) -> dict:
    torch.manual_seed(seed)
    x_train, y_train = adding_problem(args.train, args.length, seed=seed)
    x_test, y_test = adding_problem(args.test, args.length, seed=1_000_000 + seed)
    csgd = args.csgd and network == "dann"
    model = build(network, seed, n=args.n, tau=args.tau, phi=args.phi, csgd=csgd and args.csgd_mode == "gradient",
                  backend=args.backend)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = lr_groups(model, params, args.lr) if csgd and args.csgd_mode == "lr" else params
    opt = (torch.optim.SGD(groups, lr=args.lr) if args.optimizer == "sgd" else torch.optim.Adam(groups, lr=args.lr))
    clip_mode = CLIP_MODE[network] if args.clip == "paper" else args.clip
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    steps, dale_ok, diverged = 0, True, False
    for epoch in range(args.epochs):
        order = torch.randperm(args.train, generator=generator)
        for b in range(0, args.train, args.batch):
            idx = order[b: b + args.batch]
            loss = mse_loss(model, x_train[idx], y_train[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad()
            loss.backward()
            prepare_gradients(model, params, None)  # cSGD when the DANN has it (the runner's call)
            clip_gradients(params, CLIP[network], clip_mode)
            opt.step()
            steps += 1
        dale_ok = dale_ok and not model.check_constraints()
        if diverged:
            break
    with torch.no_grad():
        test_mse = float(((predict(model, x_test) - y_test) ** 2).mean()) if not diverged else float("nan")
        train_mse = float(((predict(model, x_train[:2000]) - y_train[:2000]) ** 2).mean()) if not diverged else float("nan")
    return {"network": network, "seed": seed, "tau": args.tau, "optimizer": args.optimizer, "lr": args.lr,
            "csgd": (args.csgd_mode if args.csgd else "off") if network == "dann" else "-",
            "clip": f"{CLIP[network]:g} {clip_mode}", "epochs": args.epochs, "steps": steps,
            "test_mse": test_mse, "train_mse": train_mse, "dale_ok": dale_ok,
            "seconds": round(time.perf_counter() - start, 1)}


def main(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    rows = []
    for network in args.networks:
        for seed in args.seeds:
            row = train_one(network, seed, args)
            rows.append(row)
            if not args.quiet:
                print(f"# {network} seed {seed}: test MSE {row['test_mse']:.4f} (train {row['train_mse']:.4f}), "
                      f"{row['steps']} steps, {row['seconds']} s", file=sys.stderr, flush=True)
    print(f"\nAdding problem, length {args.length}, n = {args.n}, a = dt/tau = {1 / args.tau:g}, "
          f"{args.train} training / {args.test} test sequences, {args.epochs} epochs, batch {args.batch}, "
          f"{args.optimizer} lr {args.lr:g}, seeds {' '.join(map(str, args.seeds))}\n")
    print("| network | clip | cSGD | test MSE (mean +- sd) | per seed | check_constraints() clean after every epoch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for network in args.networks:
        mine = [r for r in rows if r["network"] == network]
        v = np.array([r["test_mse"] for r in mine])
        print(f"| {LABEL[network]} | {mine[0]['clip']} | {mine[0]['csgd']} | {v.mean():.3g} +- {v.std(ddof=1) if len(v) > 1 else 0:.2g} | "
              f"{', '.join(f'{x:.3g}' for x in v)} | {'yes' if all(r['dale_ok'] for r in mine) else 'NO'} |")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return rows


if __name__ == "__main__":
    main(ARGS)
