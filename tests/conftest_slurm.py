"""pytest plugin: a session-scoped, real one-node SLURM cluster (`slurm_cluster` fixture).

Enable it with ONE of (tests/ has no __init__.py; pytest puts tests/ on sys.path):

* in tests/conftest.py:      ``pytest_plugins = ["conftest_slurm"]``
* in a test module:          ``pytest_plugins = ["conftest_slurm"]``
* or import the fixture:     ``from conftest_slurm import slurm_cluster  # noqa: F401``

(``"tests.conftest_slurm"`` also works when the repository root is on sys.path; whichever
name is used, every copy of the fixture shares one cluster per test session/xdist worker.)

The fixture yields a :class:`slurm_cluster.SlurmCluster`; while it is alive, os.environ holds
its ``env_overrides``: ``SLURM_CONF`` (the private slurm.conf), ``PATH`` (with the sacct
stand-in first) and ``PYTHONPATH`` (tests/ and the repo first, so submitit jobs can unpickle
functions from tests/ helper modules).  All are restored at the end of the session.

Skips the tests ONLY when SLURM is not installed; with ``CI`` set (e.g. ``CI=true``) it
fails them instead.  A cluster that is installed but does not start is always an error.
Tests that use the fixture get the ``slurm`` marker (``-m "not slurm"`` deselects them).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

# Always the top-level name "slurm_cluster": one module object, however this plugin was
# imported, so pickled job functions and exception classes are the same everywhere.
import slurm_cluster as _sc  # noqa: E402

__all__ = ["slurm_cluster", "ci_enabled"]


def ci_enabled() -> bool:
    """True when the CI environment variable is set (to anything but ''/0/false/no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    if ci_enabled():
        pytest.fail(f"SLURM is required on CI (CI={os.environ['CI']!r}): {reason}", pytrace=False)
    pytest.skip(reason)


def _acquire(tmp_path_factory: pytest.TempPathFactory) -> "_sc.SlurmCluster":
    state = _sc.__dict__.setdefault("_pytest_session", {"cluster": None, "users": 0, "saved": {}, "tmp": None})
    if state["cluster"] is None:
        workdir = tmp_path_factory.mktemp("slurm")
        # SLURM's unix sockets live in <workdir>/spool: keep the path short
        if len(str(workdir)) > 60:
            workdir = Path(tempfile.mkdtemp(prefix="slurm-"))
            state["tmp"] = workdir
        cluster = _sc.start_cluster(workdir)
        state["saved"] = {k: os.environ.get(k) for k in cluster.env_overrides}
        os.environ.update(cluster.env_overrides)
        state["cluster"] = cluster
    state["users"] += 1
    return state["cluster"]


def _release() -> None:
    state = _sc.__dict__["_pytest_session"]
    state["users"] -= 1
    if state["users"] > 0 or state["cluster"] is None:
        return
    cluster, state["cluster"] = state["cluster"], None
    for key, old in state["saved"].items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
    try:
        cluster.stop()
    finally:
        if state["tmp"] is not None:
            shutil.rmtree(state["tmp"], ignore_errors=True)
            state["tmp"] = None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A running one-node SLURM cluster (see module docstring)."""
    reason = _sc.slurm_missing_reason()
    if reason:
        _unavailable(reason)
    try:
        cluster = _acquire(tmp_path_factory)
    except _sc.SlurmUnavailable as e:
        _unavailable(str(e))
    try:
        yield cluster
    finally:
        _release()


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs a running one-node SLURM")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)
