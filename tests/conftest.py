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
    if "NEUROCL_DATA" not in os.environ and SHARED_DATA.is_dir():
        os.environ["NEUROCL_DATA"] = str(SHARED_DATA)
    yield


@pytest.fixture(scope="session")
def t10k_dir():
    """The real MNIST t10k files with their SHA256SUMS (shared/data/mnist-t10k)."""
    roots = os.environ.get("NEUROCL_DATA", str(SHARED_DATA)).split(os.pathsep)
    for root in roots:
        d = Path(root) / "mnist-t10k"
        if (d / "SHA256SUMS").is_file():
            return d
    pytest.fail(f"the real mnist-t10k files were not found under {roots}")


pytest_plugins = ["conftest_slurm"]
