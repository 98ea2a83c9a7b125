"""tinydiff: small, readable, fast denoising diffusion models (DDPM, DDIM and friends)."""

__version__ = "0.1.0"

from .api import distill, sample, train  # noqa: E402
from .errors import TinydiffError  # noqa: E402
from .model import DiffusionModel, load  # noqa: E402

__all__ = ["DiffusionModel", "TinydiffError", "distill", "load", "sample", "train", "__version__"]
