"""SearchParams: the one typed object for how a search trades speed for recall, accepted by every index."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

from ._validate import as_int

__all__ = ["SearchParams"]


@dataclass(frozen=True)
class SearchParams:
    """How a search trades speed for recall; every index takes it and ignores fields it has no use for.

    ef: HNSW beam width (None: the index's ef_search; at least k * rescore is used).
    rescore: candidates per result re-scored exactly (an index's rerank tier, a collection's originals);
    0 ranks by the codes alone; None: the owner's default.
    exhaustive: scan every allowed code instead of walking a graph (exact over the codes).
    """

    ef: int | None = None
    rescore: int | None = None
    exhaustive: bool = False

    def __post_init__(self) -> None:
        if self.ef is not None:
            as_int(self.ef, "ef")
        if self.rescore is not None:
            as_int(self.rescore, "rescore", low=0)
        if not isinstance(self.exhaustive, bool):
            raise TypeError(f"exhaustive must be a bool, got {type(self.exhaustive).__name__}")


DEFAULT_PARAMS = SearchParams()


def search_params(params: SearchParams | None, *, rerank_factor: int | None = None,
                  **overrides: int | bool | None) -> SearchParams:
    """`params` (default SearchParams()) with the keyword overrides that are not None applied.

    rerank_factor is the old name of rescore: still accepted, with a DeprecationWarning.
    """
    if params is None:
        params = DEFAULT_PARAMS
    elif not isinstance(params, SearchParams):
        raise TypeError(f"params must be a SearchParams, got {type(params).__name__}")
    if rerank_factor is not None:
        warnings.warn("rerank_factor is deprecated: use rescore", DeprecationWarning, stacklevel=3)
        if overrides.get("rescore") is None:
            overrides["rescore"] = rerank_factor
    given = {name: value for name, value in overrides.items() if value is not None}
    return replace(params, **given) if given else params
