"""trustlab: published methods for trustworthy foundation models, on one model handle."""

from trustlab.models import load_model

__version__ = "0.1.0"
__all__ = ["__version__", "load_model"]
