"""Execute one run of a sweep inside a worker process or a SLURM job.

The same function serves both executors: it takes the run's lock, records the attempt, runs the
resolved configuration through :func:`neurocl.run.run_protocol` (which resumes from the last
task-boundary checkpoint and writes DONE last) and returns a small, picklable outcome.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from ..store import Store, atomic_write_json
from . import attempts


def execute_run(
    run_id: str, config: dict, out: str | Path, *, retry_failed: bool = False, threads: int | None = None,
    lock_wait_s: float = 30.0, **info,
) -> dict:
    """Run ``config`` (whose id is ``run_id``) into the store ``out``.

    Returns ``{"id", "status": done|failed|busy, "ran": bool, "reason", "seconds"}``; ``ran``
    is False when nothing was trained (already done, failed before, or running elsewhere).
    """
    from ..protocol import load_protocol, protocol_run_id
    from ..run import RunFailed, mark_failed, run_protocol

    rd = Store(out).run(run_id)
    t0 = time.monotonic()
    with attempts.run_lock(rd, wait_s=lock_wait_s) as locked:
        if not locked:
            return {"id": run_id, "status": "busy", "ran": False, "reason": "running in another process"}
        # Checked under the lock: a run finished by a process that held it before us is not run again.
        if rd.is_done():
            return {"id": run_id, "status": "done", "ran": False}
        if rd.is_failed() and not retry_failed:
            return {"id": run_id, "status": "failed", "ran": False, "reason": rd.failure_reason()}
        config = copy.deepcopy(config)
        execution = config.setdefault("execution", {})
        # The sweep shows progress over runs; per-epoch bars from many workers would garble it.
        execution["progress"] = "none"
        if threads:
            execution["threads"] = threads
        index = attempts.start(rd, **info)
        try:
            proto = load_protocol(config)
            here = protocol_run_id(proto)
            if here != run_id:
                # The code that validates protocols changed between expansion and now (an
                # upgrade while jobs were queued): running would file the run under another id.
                raise RuntimeError(
                    f"the configuration resolves to run id {here} in this process, not {run_id}: "
                    "was neurocl changed since the sweep was expanded? expand and run it again"
                )
            run_protocol(proto, out, retry_failed=retry_failed, locked=True)
        except RunFailed as err:
            attempts.finish(rd, index, "failed", err.reason)
            return {"id": run_id, "status": "failed", "ran": True, "reason": err.reason, "seconds": time.monotonic() - t0}
        except Exception as err:  # noqa: BLE001 -- a bug in one run must not stop the others
            reason = f"{type(err).__name__}: {err}"
            if not rd.config.exists():  # failed before run_protocol wrote it: keep the run visible
                atomic_write_json(rd.config, config)
            if not rd.is_failed():
                mark_failed(rd, reason)
            attempts.finish(rd, index, "failed", reason)
            return {"id": run_id, "status": "failed", "ran": True, "reason": reason, "seconds": time.monotonic() - t0}
        attempts.finish(rd, index, "done")
        return {"id": run_id, "status": "done", "ran": True, "seconds": time.monotonic() - t0}
