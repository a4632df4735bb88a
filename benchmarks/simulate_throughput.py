"""Forward-simulation throughput of the E/I network across sizes (no gradients).

For each N: a plain PyTorch reference (a Python loop over time steps under torch.no_grad(),
recording r), neurocl.simulate with the torch backend and with the numba kernel; every variant
draws its noise and records r (B, T, N) and z (B, T, n_out). Interleaved rounds, median
sequences per second, ratio to the reference, and the share of a float32 matrix-multiply peak
(torch.mm on 2048 x 2048, same thread count, measured in every round of the same run; median). FLOPs per sequence count
the matrix products only: T (2 N^2 + 2 N n_in + 2 N n_out).

    python benchmarks/simulate_throughput.py            # N = 64 .. 2048, batch 256, T = 500
    python benchmarks/simulate_throughput.py --quick    # N = 64, 512; T = 100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--n-in", type=int, default=28)
    p.add_argument("--n-out", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the median is reported)")
    p.add_argument("--no-torch-backend", action="store_true", help="skip neurocl's torch backend")
    p.add_argument("--quick", action="store_true", help="N = 64 and 512, T = 100, 3 rounds")
    p.add_argument("--json", type=str, default=None, help="also write the results here")
    a = p.parse_args()
    if a.quick:
        a.sizes, a.steps, a.rounds = [64, 512], 100, 3
    return a


args = parse_args()
os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
os.environ.setdefault("NUMBA_NUM_THREADS", str(max(args.threads, 1)))

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import neurocl  # noqa: E402
from _common import cpu_model, matmul_peak  # noqa: E402  (beside this script)

torch.set_num_threads(args.threads)
numba.set_num_threads(args.threads)


def plain_simulation(model, u: torch.Tensor):
    """What a user would write: effective weights once, then a loop over time steps."""
    c = model.config
    a = c.dt / c.tau
    s_rec = math.sqrt(2 * a) * c.sigma_rec
    s_in = math.sqrt(2 * c.tau_in / c.dt) * c.sigma_in
    with torch.no_grad():
        w_in = torch.relu(model.W_in)
        w_rec = torch.relu(model.plastic_mask * model.W_rec + model.w_fixed) * model.sign
        w_out = torch.relu(model.W_out) * model.sign
        batch, steps, _ = u.shape
        x = model.x0.expand(batch, -1).clone()
        r = torch.relu(x)
        rs = torch.empty(batch, steps, c.n)
        for t in range(steps):
            u_t = torch.relu(u[:, t] + s_in * torch.randn(batch, c.n_in))
            x = (1 - a) * x + a * (r @ w_rec.T + u_t @ w_in.T) + s_rec * torch.randn(batch, c.n)
            r = torch.relu(x)
            rs[:, t] = r
        z = rs @ w_out.T
    return z, rs


def main():
    load_before = os.getloadavg()
    peaks: list[float] = []
    rows = []
    for n in args.sizes:
        model = neurocl.build_model("ei-rnn-64", seed=1, n=n, n_in=args.n_in, n_out=args.n_out)
        u = torch.rand(args.batch, args.steps, args.n_in)
        u_np = u.numpy()
        variants = {"plain PyTorch": lambda: plain_simulation(model, u)}
        if not args.no_torch_backend:
            variants["neurocl torch"] = lambda: neurocl.simulate(model, u_np, backend="torch", seed=1, record=("r",))
        variants["neurocl numba"] = lambda: neurocl.simulate(model, u_np, backend="numba", seed=1, record=("r",))
        neurocl.simulate(model, u_np[:2, :3], backend="numba", seed=1)  # compile / load the kernel
        rates = {k: [] for k in variants}
        for _ in range(args.rounds):
            peaks.append(matmul_peak(repeats=3))
            for name, f in variants.items():
                t = time.perf_counter()
                f()
                rates[name].append(args.batch / (time.perf_counter() - t))
        flops = args.steps * (2 * n * n + 2 * n * args.n_in + 2 * n * args.n_out)
        ref = float(np.median(rates["plain PyTorch"]))
        for name, r in rates.items():
            med = float(np.median(r))
            rows.append({"N": n, "variant": name, "sequences/s": med, "x reference": med / ref,
                         "GFLOP/s": med * flops / 1e9})
        del variants, model
    peak = float(np.median(peaks))
    for r in rows:
        r["% of peak"] = 100 * r["GFLOP/s"] / peak
    result = {
        "machine": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
        "load average before/after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "matmul peak GFLOP/s (median, IQR over rounds)": [round(peak, 1), round(float(np.percentile(peaks, 25)), 1),
                                                          round(float(np.percentile(peaks, 75)), 1)],
        "batch": args.batch, "steps": args.steps, "n_in": args.n_in, "n_out": args.n_out, "rows": rows,
        "versions": {"torch": torch.__version__, "numba": numba.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
    print(f"# Simulation throughput, batch={args.batch}, T={args.steps}, n_in={args.n_in}, n_out={args.n_out}; "
          f"{args.threads} thread(s), recording r and z")
    print(f"# {result['machine']}, {result['cores']} cores; load average {result['load average before/after']}")
    print(f"# float32 matmul peak (torch.mm 2048^2, measured in every round, median): {peak:.1f} GFLOP/s "
          f"(IQR {np.percentile(peaks, 25):.1f}-{np.percentile(peaks, 75):.1f})")
    print(f"| {'N':>5} | {'variant':<14} | {'sequences/s':>11} | {'GFLOP/s':>8} | {'x reference':>11} "
          f"| {'% of peak':>9} |")
    print(f"|{'-' * 6}:|{'-' * 16}|{'-' * 12}:|{'-' * 9}:|{'-' * 12}:|{'-' * 10}:|")
    for r in rows:
        print(f"| {r['N']:>5} | {r['variant']:<14} | {r['sequences/s']:>11.1f} | {r['GFLOP/s']:>8.1f} | "
              f"{r['x reference']:>11.2f} | {r['% of peak']:>9.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
