"""Training throughput of the E/I network on a CUDA GPU: plain PyTorch vs neurocl's torch backend.

For N = 64 .. 4096 units and batch 64 .. 4096 (T = 28 steps, n_in = 28, n_out = 10, as study
R1), each variant runs the runner's training step (forward, cross-entropy on the last step,
backward, Adam) in interleaved rounds; the table gives the median samples/s, the ratio to the
plain PyTorch loop, and the share of the GPU's dense matrix-multiply peak measured in the same
run (torch.mm on 8192^2, float32 and TF32). FLOPs per sample count the model's matrix products
only (as benchmarks/train_throughput.py does). Timings wait for the GPU (torch.cuda.synchronize).

    python benchmarks/gpu_throughput.py                     # the full grid
    python benchmarks/gpu_throughput.py --quick             # N 64, 1024; batch 64, 1024
    python benchmarks/gpu_throughput.py --tf32              # also the TF32 rows

Without a GPU it says so and exits 0 (so it can sit in any script).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--batch", type=int, nargs="+", default=[64, 512, 4096])
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=5, help="training steps per variant per round")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tf32", action="store_true", help="also time every variant with TF32 matrix products")
    p.add_argument("--json", type=str, default=None)
    p.add_argument("--device", default="cuda", help="cpu: try the script itself on a machine without a GPU")
    return p.parse_args()


args = parse_args()
if args.quick:
    args.n, args.batch = [64, 1024], [64, 1024]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import neurocl  # noqa: E402
from _common import PlainEIRNN  # noqa: E402  (beside this script)
from neurocl.training import Batch, batch_loss  # noqa: E402

N_IN, N_OUT = 28, 10


DEV = torch.device(args.device)


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def gpu_peak(tf32: bool, size: int = 8192, repeats: int = 10) -> float:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    if DEV.type == "cpu":
        size, repeats = 1024, 3
    a = torch.randn(size, size, device=DEV)
    b = torch.randn(size, size, device=DEV)
    for _ in range(3):
        a @ b
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - t) / 1e9


def variants(n: int, batch: int) -> dict:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(batch, args.steps, N_IN, generator=g).to(DEV)
    y = torch.randint(0, N_OUT, (batch,), generator=g).to(DEV)
    # No Omega regulariser (the preset has omega_lambda 2.0): the plain loop has none.
    size = dict(n=n, n_in=N_IN, n_out=N_OUT, omega_lambda=0.0)
    plain = PlainEIRNN(neurocl.build_model("ei-rnn-64", seed=1, **size)).to(DEV)
    opt = torch.optim.Adam(plain.parameters(), lr=1e-3)

    def plain_step():
        opt.zero_grad()
        z, _, _ = plain(u)
        torch.nn.functional.cross_entropy(z, y).backward()
        opt.step()

    model = neurocl.build_model("ei-rnn-64", seed=1, backend="torch", **size).to(DEV)
    opt_m = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    data = Batch(x=u, y=y, task=torch.zeros(batch, dtype=torch.long, device=DEV))
    class_mask = torch.ones(1, N_OUT, dtype=torch.bool, device=DEV)

    def neurocl_step():
        opt_m.zero_grad()
        loss, _, states = batch_loss(model, data, class_mask)
        (loss + model.regulariser(loss, states)).backward()
        opt_m.step()

    return {"plain PyTorch": plain_step, "neurocl torch": neurocl_step}


def timed(f) -> float:
    sync()
    t = time.perf_counter()
    for _ in range(args.iters):
        f()
    sync()
    return time.perf_counter() - t


def flops_per_sample(n: int) -> float:
    return 3 * (args.steps * (2 * n * n + 2 * n * N_IN) + 2 * n * N_OUT)


def main() -> None:
    if DEV.type == "cuda" and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA GPU here; nothing measured")
        return
    modes = [False, True] if args.tf32 else [False]
    peaks = {tf32: gpu_peak(tf32) for tf32 in modes}
    rows = []
    for tf32 in modes:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for n in args.n:
            for batch in args.batch:
                vs = variants(n, batch)
                for f in vs.values():
                    for _ in range(2):
                        f()
                rates = {k: [] for k in vs}
                for _ in range(args.rounds):
                    for k, f in vs.items():
                        rates[k].append(batch * args.iters / timed(f))
                ref = float(np.median(rates["plain PyTorch"]))
                for k, r in rates.items():
                    med = float(np.median(r))
                    rows.append({"precision": "tf32" if tf32 else "float32", "n": n, "batch": batch, "variant": k,
                                 "samples/s": med, "x reference": med / ref,
                                 "% of peak": 100 * med * flops_per_sample(n) / (peaks[tf32] * 1e9)})
                    print(f"# done: {rows[-1]}", flush=True)  # kept if a time limit cuts the run
                del vs
                if DEV.type == "cuda":
                    torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu"
    print(f"# {name}; torch {torch.__version__}; T={args.steps}, n_in={N_IN}, n_out={N_OUT}; "
          f"median of {args.rounds} rounds x {args.iters} steps")
    print("# dense matmul peak (torch.mm 8192^2): " + ", ".join(
        f"{'tf32' if k else 'float32'} {v / 1e3:.1f} TFLOP/s" for k, v in peaks.items()))
    print(f"| {'precision':<9} | {'N':>5} | {'batch':>5} | {'variant':<14} | {'samples/s':>11} | {'x plain':>7} | {'% peak':>6} |")
    print(f"|{'-' * 11}|{'-' * 6}:|{'-' * 6}:|{'-' * 16}|{'-' * 12}:|{'-' * 8}:|{'-' * 7}:|")
    for r in rows:
        print(f"| {r['precision']:<9} | {r['n']:>5} | {r['batch']:>5} | {r['variant']:<14} | {r['samples/s']:>11.0f} | "
              f"{r['x reference']:>7.2f} | {r['% of peak']:>6.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__,
                                               "peaks GFLOP/s": {str(k): v for k, v in peaks.items()}, "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()
