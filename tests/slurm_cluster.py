"""A real one-node SLURM cluster for the test suite (no pytest dependency).

Usage::

    from slurm_cluster import start_cluster, SlurmUnavailable

    cluster = start_cluster(Path("/tmp/x"))      # raises SlurmUnavailable if not installed
    try:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env, check=True)
        os.environ.update(cluster.env_overrides)  # for submitit, which reads os.environ
        ...
    finally:
        cluster.stop()

What it does (recipe: /work/shared/notes/slurm-single-node.md, slurm-wlm 22.05.8 on Debian 12):

* munge: creates /etc/munge/munge.key if absent and starts ``munged`` (as the munge user)
  unless ``munge -n | unmunge`` already works.  A munged started here is shared by all test
  clusters on the machine and killed by the last one to stop; any other munged is left alone.
* writes ``<workdir>/slurm.conf`` (node = ``hostname -s`` on 127.0.0.1, ``nproc`` CPUs, 80 %
  of the memory, state/spool/logs/pids all under ``workdir``, ``MaxArraySize``, private
  TCP ports so that several clusters -- e.g. pytest-xdist workers -- can coexist with each
  other and with a system SLURM) and starts ``slurmctld -f`` and ``slurmd -f`` (root).
* waits (bounded) until ``sinfo`` reports the node ``idle``.
* Leftovers from an earlier run in the same ``workdir`` (live daemons, stale pid files,
  old job state) are stopped and wiped: every start is a clean restart.  Clusters (daemons
  and job steps) of any earlier session whose starting process has died without ``stop()``
  (``<workdir>/owner.pid``), or whose ``slurm.conf`` was deleted, are killed too -- so the
  process that calls ``start_cluster`` must live as long as its cluster.

Accounting: there is no slurmdbd, so ``AccountingStorageType=accounting_storage/none`` and the
real ``sacct`` fails with "Slurm accounting storage is disabled".  submitit reads job state
*only* through ``sacct -o JobID,State,NodeList --parsable2 -j <id>``; when that fails it logs
"Bypassing sacct error ..." and reports every job as ``UNKNOWN``.  ``job.result()`` still works
for jobs that write their result pickle (success *or* a Python exception), but a job that dies
without writing it (scancel, time limit, OOM, node failure) is never seen as done, so
``job.wait()``/``job.result()`` would hang.  Therefore, by default, ``start_cluster`` puts a
small ``sacct`` stand-in on the cluster's PATH (``<workdir>/bin/sacct``) that answers these
queries from ``scontrol show job`` (live and recently finished jobs, kept ``MinJobAge``
seconds) and from the jobcomp/filetxt log (older jobs), in sacct's own output format
(``123_4|COMPLETED|node``, ``123_[2-3%2]|PENDING|None assigned``, ``CANCELLED by 0``...).
Pass ``sacct_shim=False`` to get the bare behaviour.  Other submitit notes:

* ``job.state`` is cached by a watcher shared by all jobs and refreshed every 2 s to 60 s;
  use ``job.get_info(mode="force")["State"]`` or ``job.done(force_check=True)`` for now.
* ``job.result()`` of a job that wrote no result pickle (cancelled, timed out) first waits
  ``job._results_timeout_s`` (15 s, for slow network filesystems) and then raises
  ``submitit.core.utils.UncompletedJobError``.
* ``KillWait=2`` in slurm.conf: submitit's job process ignores SIGTERM (it treats it as
  preemption), so with the default KillWait=30 a cancelled job lingers 30 s.
* jobs inherit the submitter's environment (sbatch's default ``--export=ALL``); submitit
  runs ``sys.executable -m submitit.core._submit``, so the job runs the venv's python.
  Submitted functions are pickled by reference: their module must be importable in the
  job, hence PYTHONPATH in ``env_overrides`` (tests/ and the repository root).
"""

from __future__ import annotations

import atexit
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

__all__ = [
    "SlurmUnavailable",
    "SlurmClusterError",
    "SlurmCluster",
    "start_cluster",
    "slurm_missing_reason",
    "scontrol_jobs",
    "job_state",
    "wait_for_job",
    "sacct_shim_main",
    "square",
    "task_report",
    "sleep_then",
    "TESTS_DIR",
]

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent

CLUSTER_NAME = "neurocltest"
PARTITION = "debug"
DEFAULT_MAX_ARRAY_SIZE = 1001

# Binaries the cluster (and submitit) need.  Daemons live in /usr/sbin, which is not on
# every user's PATH, hence the extra search directories.
CLIENT_BINARIES = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")
DAEMON_BINARIES = ("slurmctld", "slurmd")
MUNGE_BINARIES = ("munged", "munge", "unmunge")
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")

OWNER_FILE = "owner.pid"  # in the workdir: pid of the process that started the cluster
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_DIRS = (Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge"))

TERMINAL_STATES = {
    "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
    "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED",
}


class SlurmUnavailable(RuntimeError):
    """SLURM (slurmctld, sbatch, ...) or munge is not installed on this machine."""


class SlurmClusterError(RuntimeError):
    """SLURM is installed but the one-node cluster could not be started or used."""


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------

def _which(name: str) -> Optional[str]:
    path = os.environ.get("PATH", os.defpath) + os.pathsep + os.pathsep.join(_EXTRA_PATH)
    return shutil.which(name, path=path)


def slurm_missing_reason() -> Optional[str]:
    """None when every SLURM/munge binary the cluster needs is installed, else why not."""
    missing = [b for b in DAEMON_BINARIES + CLIENT_BINARIES + MUNGE_BINARIES if _which(b) is None]
    if missing:
        return (
            "SLURM is not installed (missing: " + ", ".join(missing) + "); "
            "run .ci/install-slurm.sh as root (apt-get install slurm-wlm munge)"
        )
    return None


def _pid_alive(pid: int) -> bool:
    """True if pid runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    # state is the field after the ")" that closes the command name
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _cmdline(pid: int) -> List[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _read_pid(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _is_daemon(pid: int, daemon: str, conf: Optional[Path] = None) -> bool:
    """pid is a live `daemon` process (and, if conf is given, was started with that conf)."""
    if not _pid_alive(pid):
        return False
    args = _cmdline(pid)
    if not args or not os.path.basename(args[0]).startswith(daemon):
        return False
    return conf is None or str(conf) in args


def _all_pids() -> Iterable[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def _daemons_using(conf: Path) -> List[int]:
    """slurmctld/slurmd processes started with `-f conf` (even without a pid file)."""
    out = []
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        if any(_is_daemon(pid, d, conf) for d in DAEMON_BINARIES):
            out.append(pid)
    return out


def _environ(pid: int) -> Dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def _job_processes(confs: Optional[Sequence[str]] = None) -> Dict[str, List[int]]:
    """slurmstepd and job processes by the SLURM_CONF in their environment.

    Job steps inherit SLURM_CONF (sbatch exports the submitter's environment) and slurmd's
    own SLURM_CONF reaches slurmstepd; processes without SLURM_JOB_ID in their environment
    (e.g. a pytest process that merely has SLURM_CONF set) are not job processes.
    """
    found: Dict[str, List[int]] = {}
    me = os.getpid()
    for pid in _all_pids():
        if pid == me or not _pid_alive(pid):
            continue
        env = _environ(pid)
        conf = env.get("SLURM_CONF")
        if not conf or (confs is not None and conf not in confs):
            continue
        args = _cmdline(pid)
        if (args and args[0].startswith("slurmstepd")) or "SLURM_JOB_ID" in env:
            found.setdefault(conf, []).append(pid)
    return found


def _terminate(pids: Sequence[int], timeout: float = 15.0) -> None:
    """SIGTERM, wait up to timeout, then SIGKILL (and wait a little more)."""
    pids = [p for p in pids if _pid_alive(p)]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            pids = [p for p in pids if _pid_alive(p)]
            if not pids:
                return
            time.sleep(0.1)
    if pids:
        raise SlurmClusterError(f"processes {pids} did not exit after SIGKILL")


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} not readable)"
    return f"--- last lines of {path} ---\n" + "\n".join(lines[-n:])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _pick_ports(n: int = 2) -> List[int]:
    """n consecutive-ish free TCP ports below the Linux ephemeral range (32768+)."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(20000, 30000, 2)
        ports = [base + i for i in range(n)]
        if all(_port_free(p) for p in ports):
            return ports
    raise SlurmClusterError("could not find free TCP ports for slurmctld/slurmd")


def _mem_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise SlurmClusterError("cannot read MemTotal from /proc/meminfo")


def _run(cmd: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 30.0,
         check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise SlurmClusterError(f"{' '.join(cmd)} timed out after {timeout} s") from e
    if check and proc.returncode != 0:
        raise SlurmClusterError(
            f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc


def _spawn_daemon(cmd: Sequence[str], log: Path, env: Optional[Dict[str, str]] = None,
                  user: Optional[str] = None) -> int:
    """Run a self-daemonizing program; its launcher must exit 0 (returns that code).

    stdout/stderr go to a file, not a pipe: the forked daemon could keep a pipe open and
    make us wait forever.
    """
    with open(log, "ab") as out:
        try:
            proc = subprocess.run(list(cmd), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=30, user=user)
        except subprocess.TimeoutExpired as e:
            raise SlurmClusterError(f"{' '.join(cmd)} did not daemonize within 30 s") from e
    return proc.returncode


# --------------------------------------------------------------------------------------
# munge
# --------------------------------------------------------------------------------------

def _munge_works() -> bool:
    munge, unmunge = _which("munge"), _which("unmunge")
    try:
        cred = subprocess.run([munge, "-n"], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        dec = subprocess.run([unmunge], input=cred.stdout, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return dec.returncode == 0 and b"Success" in dec.stdout


# A munged started by this module is shared by every test cluster on the machine (e.g. the
# clusters of pytest-xdist workers) and killed by the last of them to stop.  Bookkeeping,
# all under an exclusive flock (<MUNGE_REGISTRY>/lock) so that concurrent sessions neither
# start two munged (a second one would steal the first one's socket) nor kill a munged
# still in use: munged.pid = the munged we started; users/<key> = one file per cluster
# using it, holding the pid of the process that owns that cluster (stale if it is dead).
MUNGE_REGISTRY = Path("/run/neurocl-test-munge" if os.path.isdir("/run") else "/tmp/neurocl-test-munge")


@contextmanager
def _munge_lock():
    import fcntl  # noqa: PLC0415

    MUNGE_REGISTRY.mkdir(parents=True, exist_ok=True)
    with open(MUNGE_REGISTRY / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _our_munged() -> Optional[int]:
    """pid of the running munged if this module started it, else None."""
    pid = _read_pid(MUNGE_REGISTRY / "munged.pid")
    return pid if pid and _is_daemon(pid, "munged") else None


def _any_munged() -> List[int]:
    return [p for p in _all_pids() if _is_daemon(p, "munged")]


def _start_munged(workdir: Path) -> int:
    if os.geteuid() != 0:
        raise SlurmClusterError("munged is not running and starting it needs root")
    import pwd  # noqa: PLC0415

    try:
        pw = pwd.getpwnam("munge")
        uid, gid, user = pw.pw_uid, pw.pw_gid, "munge"
    except KeyError:  # no munge user: run as root
        uid, gid, user = 0, 0, None
    for d in MUNGE_DIRS + (MUNGE_KEY.parent,):
        d.mkdir(parents=True, exist_ok=True)
        os.chown(d, uid, gid)
    MUNGE_KEY.parent.chmod(0o700)
    if not MUNGE_KEY.exists():
        MUNGE_KEY.write_bytes(os.urandom(1024))
    os.chown(MUNGE_KEY, uid, gid)
    MUNGE_KEY.chmod(0o400)

    munged = _which("munged")
    log = workdir / "munged.stdout"
    # no munged process is alive here, so a leftover socket/lock is stale: --force
    # (otherwise munged refuses to start next to the socket of a killed munged)
    rc = _spawn_daemon([munged, "--force"], log, user=user)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _munge_works():
            pid = _read_pid(Path("/run/munge/munged.pid"))
            if pid and _is_daemon(pid, "munged"):
                return pid
            raise SlurmClusterError("munged runs but /run/munge/munged.pid is not its pid")
        time.sleep(0.2)
    raise SlurmClusterError(f"munged did not come up (exit code {rc}).\n{_tail(log)}")


def _ensure_munge(workdir: Path, key: str) -> Optional[int]:
    """Make `munge -n | unmunge` work; returns the pid of munged if this call started it.

    If the running munged was started by a test cluster, registers `key` as one of its users.
    """
    with _munge_lock():
        started = None
        if not _munge_works():
            # a munged that is alive but not answering yet: give it a moment
            deadline = time.monotonic() + (10 if _any_munged() else 0)
            while time.monotonic() < deadline and not _munge_works():
                time.sleep(0.2)
            if not _munge_works():
                if _any_munged():
                    raise SlurmClusterError("munged runs but `munge -n | unmunge` fails")
                started = _start_munged(workdir)
                (MUNGE_REGISTRY / "munged.pid").write_text(f"{started}\n")
        if _our_munged():
            users = MUNGE_REGISTRY / "users"
            users.mkdir(parents=True, exist_ok=True)
            (users / key).write_text(f"{os.getpid()}\n")
        return started


def _munge_release(key: str) -> bool:
    """Drop this cluster's claim on our munged; kill it if no live claim is left."""
    with _munge_lock():
        users = MUNGE_REGISTRY / "users"
        (users / key).unlink(missing_ok=True)
        pid = _our_munged()
        if pid is None:
            return False
        for entry in list(users.iterdir()) if users.is_dir() else []:
            owner = _read_pid(entry)
            if owner and _pid_alive(owner):
                return False  # still used by another live cluster
            entry.unlink(missing_ok=True)  # stale: its session died without stopping
        _terminate([pid])
        (MUNGE_REGISTRY / "munged.pid").unlink(missing_ok=True)
        return True


# --------------------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------------------

@dataclass
class SlurmCluster:
    """Handle on a running one-node cluster started by :func:`start_cluster`."""

    workdir: Path
    conf_path: Path
    node: str
    partition: str
    cpus: int
    max_array_size: int
    ports: List[int]
    env_overrides: Dict[str, str]
    """What to put into os.environ (SLURM_CONF, and PATH/PYTHONPATH, see start_cluster)."""
    sacct_shim: Optional[Path] = None
    munged_pid: Optional[int] = None
    """pid of the munged this start_cluster call started (None if one was running)."""
    _munge_key: str = field(default="", repr=False)
    _instance: str = field(default="", repr=False)
    _stopped: bool = field(default=False, repr=False)

    def superseded(self) -> bool:
        """A later start_cluster on the same workdir has taken over (and stopped) this one."""
        try:
            return (self.workdir / OWNER_FILE).read_text().strip() != self._instance
        except OSError:
            return False

    @property
    def env(self) -> Dict[str, str]:
        """Full environment for subprocesses: current os.environ + env_overrides."""
        return {**os.environ, **self.env_overrides}

    @property
    def ctld_pidfile(self) -> Path:
        return self.workdir / "slurmctld.pid"

    @property
    def slurmd_pidfile(self) -> Path:
        return self.workdir / "slurmd.pid"

    def run(self, *cmd: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command (sbatch, squeue, ...) against this cluster."""
        return _run(cmd, env=self.env, timeout=timeout, check=check)

    def daemon_pids(self) -> Dict[str, Optional[int]]:
        """pids from the pid files, None where that daemon (with this conf) is not running."""
        pids: Dict[str, Optional[int]] = {}
        for name, pf in (("slurmctld", self.ctld_pidfile), ("slurmd", self.slurmd_pidfile)):
            pid = _read_pid(pf)
            pids[name] = pid if pid and _is_daemon(pid, name, self.conf_path) else None
        return pids

    def is_running(self) -> bool:
        return all(self.daemon_pids().values())

    def node_state(self) -> str:
        out = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%t", check=False, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    def cancel_all_jobs(self, timeout: float = 15.0) -> None:
        """scancel every job of the cluster and wait (bounded) until squeue is empty."""
        out = self.run("squeue", "-h", "-o", "%F", check=False, timeout=10)
        ids = sorted(set(out.stdout.split())) if out.returncode == 0 else []
        if not ids:
            return
        self.run("scancel", *ids, check=False, timeout=10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10)
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(0.3)

    def stop(self) -> None:
        """Cancel the jobs, kill slurmd and slurmctld (by pid file) and wait for them to exit.

        Also kills munged if (and only if) a test cluster started it and no other live test
        cluster still uses it; a munged started by anyone else is never killed.  Idempotent.
        """
        if self._stopped:
            return
        self._stopped = True
        if self.superseded():  # the pid files are the new cluster's: leave them alone
            _munge_release(self._munge_key)
            return
        if self.daemon_pids()["slurmctld"]:
            try:
                self.cancel_all_jobs()
            except SlurmClusterError:
                pass
        pids = [p for p in self.daemon_pids().values() if p]
        pids += [p for p in _daemons_using(self.conf_path) if p not in pids]
        _terminate(pids)
        for pf in (self.ctld_pidfile, self.slurmd_pidfile):
            pf.unlink(missing_ok=True)
        (self.workdir / OWNER_FILE).unlink(missing_ok=True)
        # job steps that outlived the daemons (e.g. scancel failed): they would run on
        leftover = _job_processes([str(self.conf_path)]).get(str(self.conf_path), [])
        if leftover:
            _terminate(leftover, timeout=2)
        _munge_release(self._munge_key)

    def __enter__(self) -> "SlurmCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _write_conf(workdir: Path, node: str, cpus: int, mem_mb: int, ports: List[int],
                max_array_size: int) -> Path:
    conf = workdir / "slurm.conf"
    text = f"""\
# Written by tests/slurm_cluster.py -- a private one-node cluster, do not edit.
ClusterName={CLUSTER_NAME}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={workdir}/state
SlurmdSpoolDir={workdir}/spool
SlurmctldPidFile={workdir}/slurmctld.pid
SlurmdPidFile={workdir}/slurmd.pid
SlurmctldLogFile={workdir}/slurmctld.log
SlurmdLogFile={workdir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# finished jobs are written here (read by `sacct -c` and by the sacct stand-in)
JobCompType=jobcomp/filetxt
JobCompLoc={workdir}/jobcomp.txt
# finished jobs stay visible to scontrol/squeue for this many seconds
MinJobAge=300
# scancel/time limit: SIGTERM, then SIGKILL after KillWait s (default 30; submitit
# ignores SIGTERM, so a cancelled submitit job would linger 30 s)
KillWait=2
MaxArraySize={max_array_size}
MaxJobCount=10000
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    conf.write_text(text)
    return conf


def _write_sacct_shim(workdir: Path) -> Path:
    bindir = workdir / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "sacct"
    shim.write_text(
        f"#!{sys.executable}\n"
        "# sacct stand-in written by tests/slurm_cluster.py (no slurmdbd on the test cluster)\n"
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS_DIR)!r})\n"
        "from slurm_cluster import sacct_shim_main\n"
        f"sys.exit(sacct_shim_main(sys.argv[1:], jobcomp={str(workdir / 'jobcomp.txt')!r}))\n"
    )
    shim.chmod(0o755)
    return shim


def _orphaned_conf(conf: str) -> bool:
    """conf is a test cluster's slurm.conf that is gone or whose owning process died."""
    if not conf.endswith("slurm.conf"):
        return False
    if not os.path.exists(conf):
        return True
    owner = _read_pid(Path(conf).parent / OWNER_FILE)
    return owner is not None and not _pid_alive(owner)


def _reap_orphans() -> List[int]:
    """Kill the daemons and job steps of test clusters whose owner is gone.

    A test cluster is orphaned when the process that started it (pid in
    <workdir>/owner.pid) died without stop() -- e.g. a pytest session killed with SIGKILL
    -- or its slurm.conf has been deleted.  Clusters of live processes (concurrent
    sessions, xdist workers) are left alone.  Returns the pids killed.
    """
    orphans = []
    for pid in _all_pids():
        for d in DAEMON_BINARIES:
            if not _is_daemon(pid, d):
                continue
            args = _cmdline(pid)
            conf = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "-f"), None)
            if conf and _orphaned_conf(conf):
                orphans.append(pid)
    for conf, procs in _job_processes().items():
        if _orphaned_conf(conf):
            orphans += procs
    if orphans:
        _terminate(orphans, timeout=5)
    return orphans


def _cleanup_leftovers(workdir: Path, conf: Path) -> None:
    """Stop daemons of an earlier run in this workdir and wipe its state (clean restart)."""
    pids: List[int] = []
    for name in DAEMON_BINARIES:
        pf = workdir / f"{name}.pid"
        pid = _read_pid(pf)
        # only kill a pid that really is that daemon with this workdir's config
        # (a stale pid file may point to a recycled, unrelated pid)
        if pid and _is_daemon(pid, name, conf):
            pids.append(pid)
        pf.unlink(missing_ok=True)
    pids += [p for p in _daemons_using(conf) if p not in pids]
    if pids and conf.exists():
        # jobs of the old cluster would keep running in orphaned slurmstepds
        env = {**os.environ, "SLURM_CONF": str(conf)}
        out = subprocess.run(["squeue", "-h", "-o", "%F"], env=env, capture_output=True,
                             text=True, timeout=10)
        ids = sorted(set(out.stdout.split())) if out.returncode == 0 else []
        if ids:
            subprocess.run(["scancel", *ids], env=env, capture_output=True, timeout=10)
            time.sleep(1)
    _terminate(pids)
    leftover = _job_processes([str(conf)]).get(str(conf), [])
    if leftover:
        _terminate(leftover, timeout=2)
    for sub in ("state", "spool"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    (workdir / "jobcomp.txt").unlink(missing_ok=True)
    for log in ("slurmctld.log", "slurmd.log"):
        p = workdir / log
        if p.exists():
            p.replace(workdir / (log + ".old"))


def start_cluster(workdir: Path, *, max_array_size: int = DEFAULT_MAX_ARRAY_SIZE,
                  cpus: Optional[int] = None, timeout: float = 60.0,
                  sacct_shim: bool = True) -> SlurmCluster:
    """Start a one-node SLURM cluster whose files all live in `workdir`.

    Raises SlurmUnavailable if SLURM/munge is not installed, SlurmClusterError if it is
    installed but the cluster does not come up within `timeout` seconds.

    The returned handle's `env_overrides` holds SLURM_CONF, a PATH starting with the sacct
    stand-in (if `sacct_shim`) and a PYTHONPATH starting with tests/ and the repository, so
    that submitit jobs (which run `sys.executable -m submitit.core._submit` on the node) can
    unpickle functions defined in tests/ helper modules such as this one.
    """
    reason = slurm_missing_reason()
    if reason:
        raise SlurmUnavailable(reason)
    if os.geteuid() != 0:
        raise SlurmClusterError("the test cluster runs slurmctld/slurmd as root: run as root")

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "slurm.conf"
    node = socket.gethostname().split(".")[0]
    # slurmd/slurmstepd put unix sockets <spool>/<node>_<job>.<step> there (sun_path: 108 bytes)
    if len(f"{workdir}/spool/{node}_1234567.4294967292") > 107:
        raise SlurmClusterError(f"workdir path too long for SLURM's unix sockets: {workdir}")

    _reap_orphans()
    _cleanup_leftovers(workdir, conf)
    for sub in ("state", "spool"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)

    ncpu = cpus or os.cpu_count() or 1
    ports = _pick_ports(2)
    conf = _write_conf(workdir, node, ncpu, int(_mem_mb() * 0.8), ports, max_array_size)
    instance = f"{os.getpid()} {time.time_ns()}"
    (workdir / OWNER_FILE).write_text(instance + "\n")

    overrides = {"SLURM_CONF": str(conf)}
    path = os.environ.get("PATH", os.defpath)
    shim = None
    if sacct_shim:
        shim = _write_sacct_shim(workdir)
        path = f"{shim.parent}{os.pathsep}{path}"
    # srun/sbatch resolve from PATH; make sure sbin is there too for the daemons
    for extra in _EXTRA_PATH:
        if extra not in path.split(os.pathsep):
            path += os.pathsep + extra
    overrides["PATH"] = path
    pypath = [str(TESTS_DIR), str(REPO_DIR)]
    if os.environ.get("PYTHONPATH"):
        pypath += [p for p in os.environ["PYTHONPATH"].split(os.pathsep) if p not in pypath]
    overrides["PYTHONPATH"] = os.pathsep.join(pypath)

    munge_key = f"{os.getpid()}-{abs(hash(str(workdir)))}-{time.time_ns()}"
    munged_pid = _ensure_munge(workdir, munge_key)

    cluster = SlurmCluster(
        workdir=workdir, conf_path=conf, node=node, partition=PARTITION, cpus=ncpu,
        max_array_size=max_array_size, ports=ports, env_overrides=overrides,
        sacct_shim=shim, munged_pid=munged_pid, _munge_key=munge_key, _instance=instance,
    )
    env = cluster.env
    try:
        for daemon in DAEMON_BINARIES:
            log = workdir / f"{daemon}.log"
            rc = _spawn_daemon([_which(daemon), "-f", str(conf)], workdir / f"{daemon}.stdout", env=env)
            if rc != 0:
                raise SlurmClusterError(
                    f"{daemon} -f {conf} exited with {rc}.\n{_tail(workdir / f'{daemon}.stdout')}\n{_tail(log)}"
                )
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            pids = cluster.daemon_pids()
            dead = [n for n, p in pids.items() if p is None]
            # the pid file appears a moment after the launcher returns
            if dead and time.monotonic() > deadline - timeout + 5:
                raise SlurmClusterError(
                    f"{', '.join(dead)} died after start.\n"
                    + "\n".join(_tail(workdir / f"{d}.log") for d in dead)
                )
            state = cluster.node_state()
            if state == "idle":
                break
            time.sleep(0.5)
        else:
            raise SlurmClusterError(
                f"node {node} not idle after {timeout} s (sinfo state {state!r}).\n"
                f"{_tail(workdir / 'slurmctld.log')}\n{_tail(workdir / 'slurmd.log')}"
            )
    except BaseException:
        cluster.stop()
        raise
    atexit.register(cluster.stop)
    return cluster


# --------------------------------------------------------------------------------------
# helpers for tests: job state, waiting
# --------------------------------------------------------------------------------------

def _parse_scontrol_record(line: str) -> Dict[str, str]:
    """Parse one `scontrol show job --oneliner` record (values may contain spaces)."""
    rec: Dict[str, str] = {}
    key = None
    for tok in line.split(" "):
        if not tok:
            continue
        m = re.match(r"^([A-Za-z][A-Za-z0-9_:/]*)=(.*)$", tok)
        if m:
            key = m.group(1)
            rec[key] = m.group(2)
        elif key is not None:
            rec[key] += " " + tok
    return rec


def scontrol_jobs(job_id: Optional[str] = None, env: Optional[Dict[str, str]] = None,
                  timeout: float = 20.0) -> List[Dict[str, str]]:
    """Records of `scontrol show job --oneliner [job_id]` ([] if unknown/purged)."""
    cmd = ["scontrol", "show", "job", "--oneliner"] + ([str(job_id)] if job_id else [])
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return []
    if out.returncode != 0:
        return []
    return [_parse_scontrol_record(l) for l in out.stdout.splitlines() if l.strip().startswith("JobId=")]


def job_state(job_id: str, env: Optional[Dict[str, str]] = None) -> str:
    """JobState of one job (e.g. '12' or '12_3') from scontrol; '' if unknown."""
    recs = scontrol_jobs(job_id, env=env)
    return recs[0].get("JobState", "") if len(recs) == 1 else (
        ",".join(sorted({r.get("JobState", "") for r in recs})))


def wait_for_job(job_id: str, env: Optional[Dict[str, str]] = None, timeout: float = 30.0,
                 poll: float = 0.3) -> str:
    """Poll scontrol until job_id (all its array tasks) is in a terminal state; return it.

    Raises TimeoutError after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    states = ""
    while time.monotonic() < deadline:
        recs = scontrol_jobs(job_id, env=env)
        states = ",".join(sorted({r.get("JobState", "?") for r in recs}))
        if recs and all(r.get("JobState") in TERMINAL_STATES for r in recs):
            return states
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} not finished after {timeout} s (state {states!r})")


# --------------------------------------------------------------------------------------
# sacct stand-in (see module docstring)
# --------------------------------------------------------------------------------------

_SACCT_DEFAULT_FIELDS = "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode"


def _sacct_jobid(rec: Dict[str, str]) -> str:
    arr, task = rec.get("ArrayJobId"), rec.get("ArrayTaskId")
    if arr and task:
        if re.fullmatch(r"\d+", task):
            return f"{arr}_{task}"
        # pending remainder of an array: scontrol says "2-3%2" (with the throttle), as sacct
        return f"{arr}_[{task}]"
    return rec.get("JobId", "")


def _task_ids(spec: str) -> List[str]:
    """'3' -> ['3'], '2-4%2' -> ['2', '3', '4'], '1,5-6' -> ['1', '5', '6']."""
    ids: List[str] = []
    for part in spec.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            ids += [str(i) for i in range(int(lo), int(hi or lo) + 1)]
    return ids


def _sacct_field(rec: Dict[str, str], name: str) -> str:
    key = name.lower()
    if key == "jobid":
        return _sacct_jobid(rec)
    if key == "jobidraw":
        return rec.get("JobId", "")
    if key == "state":
        state = rec.get("JobState", "UNKNOWN")
        if state == "CANCELLED":  # sacct says who cancelled; assume the owner did
            uid = re.search(r"\((\d+)\)", rec.get("UserId", ""))
            state = f"CANCELLED by {uid.group(1) if uid else 0}"
        return state
    if key == "nodelist":
        nl = rec.get("NodeList", "")
        return "None assigned" if nl in ("", "(null)") else nl
    simple = {
        "jobname": "JobName", "partition": "Partition", "account": "Account",
        "alloccpus": "NumCPUs", "exitcode": "ExitCode", "elapsed": "RunTime",
        "start": "StartTime", "end": "EndTime", "submit": "SubmitTime",
        "timelimit": "TimeLimit", "reason": "Reason", "workdir": "WorkDir",
        "nnodes": "NumNodes",
    }
    if key in simple:
        val = rec.get(simple[key], "")
        return "" if val == "(null)" else val
    if key == "user":
        return rec.get("UserId", "").split("(")[0]
    return ""


def _jobcomp_records(path: str) -> List[Dict[str, str]]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    recs = []
    for line in lines:
        rec = _parse_scontrol_record(line.strip())
        if "Name" in rec and "JobName" not in rec:
            rec["JobName"] = rec["Name"]
        recs.append(rec)
    return recs


def sacct_shim_main(argv: List[str], jobcomp: str) -> int:
    """Answer the sacct queries submitit makes, from scontrol (+ the jobcomp log)."""
    fields, jobs, header, parsable = _SACCT_DEFAULT_FIELDS, [], True, None
    it = iter(argv)
    for arg in it:
        if arg in ("-o", "--format"):
            fields = next(it, fields)
        elif arg.startswith("--format="):
            fields = arg.split("=", 1)[1]
        elif arg.startswith("-o") and len(arg) > 2:
            fields = arg[2:]
        elif arg in ("-j", "--jobs"):
            jobs += next(it, "").split(",")
        elif arg.startswith("--jobs="):
            jobs += arg.split("=", 1)[1].split(",")
        elif arg.startswith("-j") and len(arg) > 2:
            jobs += arg[2:].split(",")
        elif arg in ("-P", "--parsable2"):
            parsable = "2"
        elif arg in ("-p", "--parsable"):
            parsable = "1"
        elif arg in ("-n", "--noheader"):
            header = False
        elif arg in ("-h", "--help", "--usage", "-V", "--version"):
            print("sacct stand-in for the neurocl test cluster (tests/slurm_cluster.py)")
            return 0
        # every other option is accepted and ignored
    names = [f.split("%")[0] for f in fields.split(",") if f]
    jobs = [j for j in jobs if j]

    records: List[Dict[str, str]] = []
    seen = set()

    def add(rec: Dict[str, str]) -> None:
        key = (rec.get("JobId"), rec.get("ArrayTaskId"))
        if key not in seen:
            seen.add(key)
            records.append(rec)

    if jobs:
        comp = None
        for j in jobs:
            main = j.split("_")[0].split(".")[0]
            found = scontrol_jobs(main)
            if not found:  # purged from slurmctld (MinJobAge): look in the jobcomp log
                comp = _jobcomp_records(jobcomp) if comp is None else comp
                found = [r for r in comp if main in (r.get("JobId"), r.get("ArrayJobId"))]
            for rec in found:
                if "_" in j and j.split("_", 1)[1] not in _task_ids(rec.get("ArrayTaskId", "")):
                    continue
                add(rec)
    else:
        for rec in scontrol_jobs():
            add(rec)

    def order(rec: Dict[str, str]):
        main = rec.get("ArrayJobId") or rec.get("JobId") or "0"
        tasks = sorted(int(t) for t in _task_ids(rec.get("ArrayTaskId", "")) or ["-1"])
        return (int(main) if main.isdigit() else 0, tasks[0])

    records.sort(key=order)
    sep = "|"
    if header:
        print(sep.join(names) + ("|" if parsable == "1" else ""))
    for rec in records:
        print(sep.join(_sacct_field(rec, n) for n in names) + ("|" if parsable == "1" else ""))
    return 0


# --------------------------------------------------------------------------------------
# functions to submit with submitit (module level so that jobs can unpickle them)
# --------------------------------------------------------------------------------------

def square(x: int) -> int:
    return x * x


def task_report(x: int) -> Dict[str, object]:
    """What a job sees: its value, SLURM ids and whether it runs the submitter's python."""
    return {
        "x": x,
        "square": x * x,
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "cpus": os.environ.get("SLURM_CPUS_PER_TASK"),
        "python": sys.executable,
        "start": time.time(),
    }


def sleep_then(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x
