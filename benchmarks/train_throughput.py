"""Training throughput of the E/I network: plain PyTorch vs neurocl's torch and numba backends.

One process, interleaved rounds (each round times every variant in turn, so that a change in the
machine's load hits all of them alike); the table reports the median over rounds of samples per
second, the ratio to the plain PyTorch reference and the share of a float32 matrix-multiply peak
(torch.mm on 2048 x 2048, same thread count) measured in every round of the same run (median).

A training step is what the runner does: forward, cross-entropy on the last step (plus the
Pascanu Omega regulariser in the "+ Omega" rows), backward, Adam step. FLOPs per sample count
the matrix products of the model only (forward T (2 N^2 + 2 N n_in) + 2 N n_out for the
readout of the last step; backward twice the forward), not the elementwise work.

    python benchmarks/train_throughput.py                 # R1 size, 2 threads
    python benchmarks/train_throughput.py --threads 1 --rounds 30
    python benchmarks/train_throughput.py --cold-start    # also: compile time vs cached start
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--n-in", type=int, default=28)
    p.add_argument("--n-out", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (the median is reported)")
    p.add_argument("--iters", type=int, default=10, help="training steps per variant per round")
    p.add_argument("--no-omega", action="store_true", help="skip the '+ Omega' rows")
    p.add_argument("--optimizer", choices=["adam", "adam-fused"], default="adam",
                   help="the optimiser of every variant (torch.optim.Adam, or with fused=True)")
    p.add_argument("--cold-start", action="store_true", help="measure the first (compiling) and a cached start")
    p.add_argument("--json", type=str, default=None, help="also write the results here")
    return p.parse_args()


args = parse_args()
os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
os.environ.setdefault("NUMBA_NUM_THREADS", str(max(args.threads, 1)))

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import neurocl  # noqa: E402
from _common import PlainEIRNN, cpu_model, matmul_peak  # noqa: E402  (beside this script)
import neurocl.rules  # noqa: E402,F401  (registers the rules before training imports them)
from neurocl.rules.base import Batch  # noqa: E402
from neurocl.training import batch_loss  # noqa: E402

torch.set_num_threads(args.threads)
numba.set_num_threads(args.threads)


def make_optimizer(params):
    if args.optimizer == "adam-fused":
        return torch.optim.Adam(params, lr=1e-3, fused=True)
    return torch.optim.Adam(params, lr=1e-3)  # what a user (and the runner) writes


def make_steps(omega: float, batch: int, steps: int):
    base = dict(n=args.n, n_in=args.n_in, n_out=args.n_out, omega_lambda=omega)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(batch, steps, args.n_in, generator=g)
    y = torch.randint(0, args.n_out, (batch,), generator=g)
    out = {}

    plain = PlainEIRNN(neurocl.build_model("ei-rnn-64", seed=1, **base))
    opt = make_optimizer(plain.parameters())

    def plain_step():
        opt.zero_grad()
        z, xs, w_rec = plain(u)
        loss = torch.nn.functional.cross_entropy(z, y)
        if omega:
            loss = loss + omega * plain.omega(loss, xs, w_rec)
        loss.backward()
        opt.step()

    out["plain PyTorch"] = plain_step
    # neurocl's variants run the runner's own step: training.batch_loss (the fused numba path
    # where the backend is numba), the model's regulariser, backward, Adam.
    batch_data = Batch(x=u, y=y, task=torch.zeros(batch, dtype=torch.long))
    class_mask = torch.ones(1, args.n_out, dtype=torch.bool)
    dann = dict(dale="dann", init="dann")
    per_unit_tau = dict(tau=[50.0 + i for i in range(args.n)])
    for label, backend, fused, extra in (("torch", "torch", False, {}), ("numba, unfused", "numba", False, {}),
                                         ("numba", "numba", True, {}), ("numba, dale: dann", "numba", True, dann),
                                         ("numba, per-unit tau", "numba", True, per_unit_tau),
                                         ("torch, per-unit tau", "torch", False, per_unit_tau)):
        model = neurocl.build_model("ei-rnn-64", seed=1, backend=backend, **base, **extra)
        model.use_fused_loss = fused
        opt_m = make_optimizer([p for p in model.parameters() if p.requires_grad])

        def step(model=model, opt_m=opt_m):
            opt_m.zero_grad()
            loss, _, states = batch_loss(model, batch_data, class_mask)
            loss = loss + model.regulariser(loss, states)
            loss.backward()
            opt_m.step()

        out[f"neurocl {label}"] = step
    return out


def flops_per_sample() -> float:
    n, n_in, n_out, steps = args.n, args.n_in, args.n_out, args.steps
    forward = steps * (2 * n * n + 2 * n * n_in) + 2 * n * n_out
    return 3 * forward


def run_rounds(variants: dict, batch: int, peaks: list[float]) -> dict[str, list[float]]:
    """Median-ready samples/s per variant; the matmul peak is measured in every round too."""
    for f in variants.values():  # warm up (and compile)
        for _ in range(3):
            f()
    rates = {k: [] for k in variants}
    for _ in range(args.rounds):
        peaks.append(matmul_peak(repeats=3))
        for name, f in variants.items():
            t = time.perf_counter()
            for _ in range(args.iters):
                f()
            rates[name].append(batch * args.iters / (time.perf_counter() - t))
    return rates


# ---------------------------------------------------------------- cold start
COLD_SCRIPT = """
import time
t0 = time.perf_counter()
import torch, neurocl
m = neurocl.build_model("ei-rnn-64", backend="numba")
z, states = m(torch.rand(64, 28, 28), return_states=True)
loss = torch.nn.functional.cross_entropy(z[:, -1], torch.zeros(64, dtype=torch.long))
(loss + m.regulariser(loss, states)).backward()
print(time.perf_counter() - t0)
"""


def cold_start() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        times = []
        for _ in range(2):
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", COLD_SCRIPT], env=env, cwd=REPO, capture_output=True,
                                 text=True, check=True)
            times.append((time.perf_counter() - t, float(out.stdout.strip().splitlines()[-1])))
    return {"first process (compiles), s": times[0][0], "second process (cache), s": times[1][0],
            "first step in first process, s": times[0][1], "first step in second process, s": times[1][1]}


# ---------------------------------------------------------------- main
def main():
    load_before = os.getloadavg()
    fl = flops_per_sample()
    rows = []
    peaks: list[float] = []
    all_rates = []
    for omega in ([0.0] if args.no_omega else [0.0, 2.0]):
        all_rates.append((omega, run_rounds(make_steps(omega, args.batch, args.steps), args.batch, peaks)))
    peak = float(np.median(peaks))
    for omega, rates in all_rates:
        ref = float(np.median(rates["plain PyTorch"]))
        # The budget: DANN and per-unit tau at most 1.3x the step time of today's numba
        # network; the median of the ratios measured in the same round (paired, so that a
        # change in the machine's load cancels).
        for variant in ("dale: dann", "per-unit tau"):
            paired = np.asarray(rates["neurocl numba"]) / np.asarray(rates[f"neurocl numba, {variant}"])
            print(f"# step time, {variant} / colei on numba{' + Omega' if omega else ''}: "
                  f"{float(np.median(paired)):.2f}x (rounds: {float(paired.min()):.2f}-{float(paired.max()):.2f})")
        for name, r in rates.items():
            med = float(np.median(r))
            rows.append({
                "variant": name + (" + Omega" if omega else ""),
                "samples/s": med,
                "q25-q75": (float(np.percentile(r, 25)), float(np.percentile(r, 75))),
                "x reference": med / ref,
                "% of peak": 100 * med * fl / (peak * 1e9),
            })
    result = {
        "machine": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
        "load average before/after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "matmul peak GFLOP/s (median, IQR over rounds)": [round(peak, 1), round(float(np.percentile(peaks, 25)), 1),
                                                          round(float(np.percentile(peaks, 75)), 1)],
        "optimizer": args.optimizer, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "size": dict(n=args.n, n_in=args.n_in, n_out=args.n_out, batch=args.batch, steps=args.steps),
        "MFLOP per sample": fl / 1e6,
        "rows": rows,
        "versions": {"torch": torch.__version__, "numba": numba.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
    if args.cold_start:
        result["cold start"] = cold_start()

    print(f"# Training throughput, N={args.n}, n_in={args.n_in}, n_out={args.n_out}, batch={args.batch}, "
          f"T={args.steps}; {args.threads} thread(s); optimiser {args.optimizer}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"# {result['machine']}, {result['cores']} cores; load average {result['load average before/after']}")
    print(f"# float32 matmul peak (torch.mm 2048^2, median over rounds): {peak:.1f} GFLOP/s "
          f"(IQR {np.percentile(peaks, 25):.1f}-{np.percentile(peaks, 75):.1f}); "
          f"{fl / 1e6:.3f} MFLOP per training sample")
    print(f"| {'variant':<26} | {'samples/s':>10} | {'IQR':>17} | {'x reference':>11} | {'% of peak':>9} |")
    print(f"|{'-' * 28}|{'-' * 12}:|{'-' * 19}:|{'-' * 13}:|{'-' * 11}:|")
    for r in rows:
        iqr = f"{r['q25-q75'][0]:.0f}-{r['q25-q75'][1]:.0f}"
        print(f"| {r['variant']:<26} | {r['samples/s']:>10.0f} | {iqr:>17} | {r['x reference']:>11.2f} | "
              f"{r['% of peak']:>9.1f} |")
    if args.cold_start:
        for k, v in result["cold start"].items():
            print(f"# cold start: {k}: {v:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
