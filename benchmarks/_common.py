"""Helpers the throughput benchmarks share: the matmul peak they report against, the machine.

Import it only after the benchmark has set its thread environment (OMP_NUM_THREADS,
NUMBA_NUM_THREADS): importing torch fixes the thread pool.
"""

from __future__ import annotations

import platform
import subprocess
import time

import numpy as np
import torch


def matmul_peak(size: int = 2048, repeats: int = 15) -> float:
    """float32 GFLOP/s of torch.mm on large square matrices (median)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * size**3 / float(np.median(times)) / 1e9


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return platform.processor() or "unknown"
