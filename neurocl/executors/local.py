"""The local executor: a pool of spawned worker processes, one run per task.

Why not ``concurrent.futures.ProcessPoolExecutor``: when one of its workers dies it declares
the whole pool broken and kills every other worker, so one out-of-memory run would cost the
progress of every run in flight, and it cannot say which run was executing in which process.
Here each worker has its own pipe and runs one run at a time, so the sweep knows exactly
which run a dead worker held: only that run gets an attempt counted (``died`` in its
``attempts.json``) and is retried, up to ``max_attempts``, then marked FAILED with the reason;
the dead worker is replaced and the other runs go on untouched.

Ctrl-C or SIGTERM kills the workers and returns; every finished run is kept (DONE is written
last, atomically) and the unfinished ones resume from their task-boundary checkpoints when the
sweep is started again. Workers also exit by themselves within a fraction of a second if the
sweep process disappears (SIGKILL), so no orphan goes on writing into a run that a restarted
sweep takes over (the run lock would stop it anyway).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

from ..store import Store, atomic_write_json
from . import attempts


class Interrupted(Exception):
    """The sweep received SIGINT or SIGTERM and stopped its workers."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---------------------------------------------------------------------------- worker side
def _watch_parent(parent: int) -> None:
    """Exit as soon as the sweep process is gone (it may have been SIGKILLed)."""

    def loop() -> None:
        while True:
            time.sleep(0.2)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=loop, name="neurocl-parent-watch", daemon=True).start()


def _worker_main(conn, parent: int, threads: int) -> None:
    # Ctrl-C reaches the whole process group; the sweep process decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_parent(parent)
    import torch

    torch.set_num_threads(threads)
    from .worker import execute_run

    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        conn.send(execute_run(**task))


# ---------------------------------------------------------------------------- sweep side
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


@contextmanager
def _thread_env(threads: int):
    """Thread pools are sized when a library loads, which in a spawned worker happens while it
    unpickles its target, before any code of ours runs: the limit must be in its environment."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: str(threads) for k in _THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class _Worker:
    proc: Any
    conn: Any
    run: Any = None  # the SweepRun it is executing


@dataclass
class LocalReport:
    total: int
    ran: list[str] = field(default_factory=list)  # finished by this sweep
    already_done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # id -> reason
    busy: list[str] = field(default_factory=list)  # held by another process
    retried: dict[str, int] = field(default_factory=dict)  # id -> worker deaths seen


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"worker process killed by {name}{hint}"
    return f"worker process exited with code {exitcode}"


class LocalExecutor:
    def __init__(
        self, out: str | Path, *, workers: int | None = None, threads: int = 1, max_attempts: int = 3,
        retry_failed: bool = False, on_result: Callable[[dict, Any], None] | None = None, lock_wait_s: float = 30.0,
    ):
        self.out = Path(out)
        self.workers = workers or os.cpu_count() or 1
        self.threads = threads
        self.max_attempts = max_attempts
        self.retry_failed = retry_failed
        self.lock_wait_s = lock_wait_s
        self.on_result = on_result or (lambda result, run: None)
        self._ctx = multiprocessing.get_context("spawn")

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main, args=(child_conn, os.getpid(), self.threads), name="neurocl-sweep-worker", daemon=True
        )
        with _thread_env(self.threads):
            proc.start()
        child_conn.close()
        return _Worker(proc, parent_conn)

    def _dispatch(self, w: _Worker, run) -> None:
        w.run = run
        w.conn.send(
            dict(
                run_id=run.id, config=run.config, out=str(self.out), retry_failed=self.retry_failed,
                threads=self.threads, lock_wait_s=self.lock_wait_s, executor="local",
            )
        )

    def run(self, runs: list) -> LocalReport:
        report = LocalReport(total=len(runs))
        queue = deque(runs)
        pool: list[_Worker] = []

        def stop(signum, frame):
            raise Interrupted(signum)

        on_main = threading.current_thread() is threading.main_thread()
        old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)} if on_main else {}
        try:
            pool = [self._spawn() for _ in range(min(self.workers, len(queue)))]
            while queue or any(w.run is not None for w in pool):
                for w in pool:
                    if w.run is None and queue:
                        self._dispatch(w, queue.popleft())
                ready = set(wait([w.conn for w in pool] + [w.proc.sentinel for w in pool], timeout=1.0))
                for i, w in enumerate(pool):
                    if w.conn in ready:
                        try:
                            result = w.conn.recv()
                        except (EOFError, OSError):
                            result = None  # it died mid-message: handled below as a death
                        if result is not None:
                            run, w.run = w.run, None
                            self._record(report, result, run)
                            continue
                    if w.proc.sentinel in ready or (w.conn in ready and not w.proc.is_alive()):
                        w.proc.join()
                        self._died(report, w, queue)
                        pool[i] = self._spawn() if queue else None  # the retry, or the next run
                pool = [w for w in pool if w is not None]
        except Interrupted:
            for s in old:  # a second Ctrl-C must not interrupt the clean-up
                signal.signal(s, signal.SIG_IGN)
            for w in pool:
                w.proc.kill()
            for w in pool:
                w.proc.join()
                if w.run is not None:
                    attempts.interrupted(Store(self.out).run(w.run.id), w.proc.pid)
            pool = []
            raise
        finally:
            # Normal end: the workers are idle and hold nothing; tearing down torch, numba and
            # pyarrow at interpreter exit takes seconds, so do not wait for a polite exit.
            for w in pool:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            for w in pool:
                w.proc.join(timeout=0.5)
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join()
            for s, handler in old.items():
                signal.signal(s, handler)
        return report

    def _record(self, report: LocalReport, result: dict, run) -> None:
        status = result["status"]
        if status == "done":
            (report.ran if result.get("ran") else report.already_done).append(run.id)
        elif status == "failed":
            report.failed[run.id] = result.get("reason") or "unknown"
        elif status == "busy":
            report.busy.append(run.id)
        self.on_result(result, run)

    def _died(self, report: LocalReport, w: _Worker, queue: deque) -> None:
        run, w.run = w.run, None
        if run is None:
            return
        reason = _death_reason(w.proc.exitcode)
        rd = Store(self.out).run(run.id)
        if rd.is_done():  # it died after writing DONE (the last thing a run writes): finished
            attempts.interrupted(rd, w.proc.pid)
            self._record(report, {"id": run.id, "status": "done", "ran": True}, run)
            return
        attempts.died(rd, w.proc.pid, reason, executor="local")
        n = attempts.deaths(rd)
        report.retried[run.id] = n
        if n < self.max_attempts:
            print(f"run {run.id} ({run.label}): {reason}; retrying (attempt {n + 1} of {self.max_attempts})", file=sys.stderr, flush=True)
            queue.appendleft(run)
            return
        from ..run import mark_failed

        if not rd.config.exists():
            atomic_write_json(rd.config, run.config)
        final = f"{reason}; gave up after {n} attempts"
        mark_failed(rd, final)
        self._record(report, {"id": run.id, "status": "failed", "ran": True, "reason": final}, run)
