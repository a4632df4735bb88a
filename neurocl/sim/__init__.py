"""The E/I rate network: configuration, connectivity, effective weights, backends.

The names below load on first use, so that validating a config (``sim.config``, the backend
table) does not import torch through the network.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

__all__ = ["EIRNNConfig", "EIRNN", "effective_weights"]
__getattr__, __dir__ = lazy_attributes(__name__, {"EIRNNConfig": ".config", "EIRNN": ".ei_rnn",
                                                  "effective_weights": ".weights"})

if TYPE_CHECKING:  # for editors and type checkers; at run time __getattr__ loads them
    from .config import EIRNNConfig
    from .ei_rnn import EIRNN
    from .weights import effective_weights
