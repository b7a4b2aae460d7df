"""tqsearch: TurboQuant vector compression and search (numpy in, numpy out)."""

from ._core import __version__, available_simd_levels, cpu_features
from ._core import default_simd_level as simd_level
from ._kinds import load
from .codebooks import Codebook, lloyd_max
from .collection import Collection
from .collection import open_collection as open  # noqa: A004 - tqsearch.open(path) opens a collection
from .errors import (ClosedError, ConflictError, FileFormatError, InvalidArgumentError, InvalidTypeError,
                     NotFoundError, TQSearchError)
from .fde import FDEEncoder
from .flat import FlatIndex
from .hnsw import HNSWIndex
from .multivector import MultiVectorIndex
from .params import SearchParams
from .quantizer import Codes, TurboQuantMSE, TurboQuantProd
from .rotation import DenseRotation, FhtKacRotation, Rotation, make_rotation


__all__ = [
    "ClosedError",
    "Codebook",
    "Codes",
    "Collection",
    "ConflictError",
    "DenseRotation",
    "FDEEncoder",
    "FhtKacRotation",
    "FileFormatError",
    "FlatIndex",
    "HNSWIndex",
    "InvalidArgumentError",
    "InvalidTypeError",
    "MultiVectorIndex",
    "NotFoundError",
    "Rotation",
    "SearchParams",
    "TQSearchError",
    "TurboQuantMSE",
    "TurboQuantProd",
    "__version__",
    "available_simd_levels",
    "cpu_features",
    "lloyd_max",
    "load",
    "make_rotation",
    "open",
    "simd_level",
]
