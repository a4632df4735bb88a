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
