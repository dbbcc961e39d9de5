"""asymret: asymmetric metric learning for instance-level image retrieval."""

from asymret.errors import AsymretError

__version__ = "0.1.0"
__all__ = ["AsymretError", "__version__"]
