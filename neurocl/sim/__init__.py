"""The E/I rate network: configuration, connectivity, effective weights, backends.

The names below load on first use, so that validating a config (``sim.config``, the backend
table) does not import torch through the network.
"""

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {"EIRNNConfig": "config", "EIRNN": "ei_rnn", "effective_weights": "weights"}

__all__ = ["EIRNNConfig", "EIRNN", "effective_weights"]

if TYPE_CHECKING:  # for editors and type checkers; at run time __getattr__ loads them
    from .config import EIRNNConfig
    from .ei_rnn import EIRNN
    from .weights import effective_weights


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
