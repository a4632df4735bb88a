from .base import Model
from .lstm import LSTM, LSTMConfig
from .mlp import MLP, MLPConfig

__all__ = ["Model", "LSTM", "LSTMConfig", "MLP", "MLPConfig"]
