"""neurocl: continual learning on biologically constrained recurrent networks."""

__version__ = "0.1.0"

from .models import build_model, load_model, save_model  # noqa: E402
from .sim.simulate import simulate  # noqa: E402

__all__ = ["build_model", "load_model", "save_model", "simulate", "__version__"]
