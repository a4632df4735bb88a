import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _data_path():
    # CI sets NEUROCL_DATA; a developer's checkout has ../shared/data beside it.
    if not os.environ.get("NEUROCL_DATA") and SHARED_DATA.is_dir():
        os.environ["NEUROCL_DATA"] = str(SHARED_DATA)
    yield


@pytest.fixture(scope="session")
def t10k_dir():
    """The real MNIST t10k files with their SHA256SUMS, wherever neurocl looks for data
    (../shared/data, $NEUROCL_DATA, or the cache that `make test` fetches them into)."""
    from neurocl.data import search_dirs

    tried = [base / "mnist-t10k" for base, _ in search_dirs()]
    for d in tried:
        if (d / "SHA256SUMS").is_file():
            return d
    pytest.fail(
        "the real mnist-t10k files (with SHA256SUMS) were not found in any of "
        + ", ".join(map(str, tried))
        + ": run the tests with `make test`, which finds or fetches them, or set NEUROCL_DATA "
        "to a directory that holds mnist-t10k/"
    )


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No dataset anywhere but where a test puts one (no $NEUROCL_DATA, an empty home and an
    empty stand-in for /usr/share/datasets)."""
    from neurocl.data import clear_cache
    from neurocl.data import search as search_mod

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NEUROCL_DATA", raising=False)
    monkeypatch.setattr(search_mod, "DEBIAN_DATASETS", tmp_path / "debian")
    clear_cache()
    yield tmp_path
    clear_cache()


pytest_plugins = ["conftest_slurm"]
