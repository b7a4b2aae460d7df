"""tqsearch: TurboQuant vector compression and search (numpy in, numpy out)."""

from ._core import __version__, available_simd_levels, cpu_features
from ._core import default_simd_level as simd_level
from .codebooks import Codebook, lloyd_max
from .errors import FileFormatError
from .flat import FlatIndex
from .hnsw import HNSWIndex
from .quantizer import Codes, TurboQuantMSE, TurboQuantProd
from .rotation import DenseRotation, FhtKacRotation, Rotation, make_rotation


def load(path, mmap: bool = True):
    """Load an index written by `save` (the file's magic says which kind)."""
    with open(path, "rb") as f:
        magic = f.read(8)
    kind = HNSWIndex if magic == HNSWIndex._MAGIC else FlatIndex  # FlatIndex names a foreign file's problem
    return kind.load(path, mmap=mmap)


__all__ = [
    "Codebook",
    "Codes",
    "DenseRotation",
    "FhtKacRotation",
    "FileFormatError",
    "FlatIndex",
    "HNSWIndex",
    "Rotation",
    "TurboQuantMSE",
    "TurboQuantProd",
    "__version__",
    "available_simd_levels",
    "cpu_features",
    "lloyd_max",
    "load",
    "make_rotation",
    "simd_level",
]
