"""KV-cache compression for Hugging Face transformers with TurboQuant (needs the `llm` extra: torch, transformers).

    from tqsearch.kvcache import TurboQuantCache
    cache = TurboQuantCache(model.config, key_bits=4, value_bits=3)  # or 3.5 / 3.5, the paper's mixed precision
    model.generate(ids, past_key_values=cache)
    model.set_attn_implementation("turboquant")  # optional: attend from the codes without rebuilding keys
"""

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("tqsearch.kvcache needs torch and transformers: pip install 'tqsearch[llm]'") from e

from .attention import ATTENTION, compressed_attention
from .cache import DEFAULT_SINK, DEFAULT_WINDOW, TurboQuantCache, TurboQuantLayer
from .codec import GroupCodec, HeadCodec

__all__ = ["ATTENTION", "DEFAULT_SINK", "DEFAULT_WINDOW", "GroupCodec", "HeadCodec", "TurboQuantCache",
           "TurboQuantLayer", "compressed_attention"]
