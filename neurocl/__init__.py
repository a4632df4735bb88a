"""neurocl: continual learning on biologically constrained recurrent networks.

The names below load on first use, so that ``neurocl --help`` and the commands that need no
tensors do not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "build_model": "neurocl.models",
    "condition_table": "neurocl.results",
    "doctor": "neurocl.analysis.doctor",
    "load_model": "neurocl.models",
    "load_run": "neurocl.run",
    "run_protocol": "neurocl.run",
    "save_model": "neurocl.models",
    "simulate": "neurocl.sim.simulate",
}

__all__ = ["build_model", "condition_table", "doctor", "load_model", "load_run", "run_protocol", "save_model",
           "simulate", "__version__"]

if TYPE_CHECKING:  # for editors and type checkers; at run time __getattr__ loads them
    from .analysis.doctor import doctor
    from .models import build_model, load_model, save_model
    from .results import condition_table
    from .run import load_run, run_protocol
    from .sim.simulate import simulate

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
