"""The E/I rate network: configuration, connectivity, effective weights, backends."""

from .config import EIRNNConfig
from .ei_rnn import EIRNN
from .weights import effective_weights

__all__ = ["EIRNNConfig", "EIRNN", "effective_weights"]
