"""vmfprior: von Mises-Fisher priors from a classifier's final layer.

Public API:
    VonMisesFisher, HypersphericalUniform  -- distributions on the unit sphere S^{d-1} of R^d, with registered KLs
    VMFPrior                               -- the class-conditional vMF defined by a classifier's last layer
    log_bessel_iv, mean_resultant_length   -- the Bessel-function numerics they rest on
"""

from . import constraints  # noqa: F401 -- registers biject_to / transform_to for the constraints
from ._version import __version__
from .bessel import log_bessel_iv, mean_resultant_length
from .distributions import HypersphericalUniform, VonMisesFisher
from .prior import VMFPrior

__all__ = [
    "__version__",
    "VonMisesFisher",
    "HypersphericalUniform",
    "VMFPrior",
    "log_bessel_iv",
    "mean_resultant_length",
]
