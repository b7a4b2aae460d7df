"""tqsearch: TurboQuant vector compression and search (numpy in, numpy out)."""

from ._core import __version__, available_simd_levels, cpu_features
from ._core import default_simd_level as simd_level
from .codebooks import Codebook, lloyd_max
from .errors import FileFormatError
from .quantizer import Codes, TurboQuantMSE, TurboQuantProd
from .rotation import DenseRotation, FhtKacRotation, Rotation, make_rotation

__all__ = [
    "Codebook",
    "Codes",
    "DenseRotation",
    "FhtKacRotation",
    "FileFormatError",
    "Rotation",
    "TurboQuantMSE",
    "TurboQuantProd",
    "__version__",
    "available_simd_levels",
    "cpu_features",
    "lloyd_max",
    "make_rotation",
    "simd_level",
]
