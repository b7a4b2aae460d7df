"""TurboQuantCache: a transformers Cache that stores keys and values TurboQuant-compressed per head.

Each layer keeps the first `sink` and the most recent `window` tokens in full precision and everything
between as codes (codec.py). The tokens passed to an update are always attended exactly; what attention
sees of the coded tokens is rebuilt from the codes, or read from them directly under the "turboquant"
attention (attention.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.cache_utils import Cache, DynamicLayer

from .attention import ATTENTION, hand_over
from .codec import HeadCodec, HeadState, Packed

__all__ = ["DEFAULT_SINK", "DEFAULT_WINDOW", "TurboQuantCache", "TurboQuantLayer"]

DEFAULT_WINDOW = 32  # recent tokens kept exact; see docs/kvcache.md for the measurements behind both
DEFAULT_SINK = 4  # first tokens kept exact (attention sinks)


class TurboQuantLayer(DynamicLayer):
    """One decoder layer's cache, in sequence order: `sink_keys` (the first `sink` tokens, exact), `key_codes`
    (TurboQuant codes) and `keys` (the last `window` tokens, exact); values alike."""

    def __init__(self, key_codec: HeadCodec, value_codec: HeadCodec, window: int, sink: int,
                 window_dtype: torch.dtype | None, config: object) -> None:
        super().__init__()
        self.key_codec, self.value_codec = key_codec, value_codec
        self.window, self.sink, self.window_dtype, self.config = window, sink, window_dtype, config
        self.sink_keys: torch.Tensor | None = None
        self.sink_values: torch.Tensor | None = None
        self.key_codes: list[Packed] | None = None
        self.value_codes: list[Packed] | None = None
        self.key_state: HeadState | None = None
        self.value_state: HeadState | None = None
        self.attend: tuple | None = None  # what the next compressed_attention call reads

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Empty exact stores and the per-head outlier channels, chosen from these first (prefill) states."""
        self.dtype, self.device = key_states.dtype, key_states.device
        b, h, _, d = key_states.shape
        empty = torch.empty(b, h, 0, d, dtype=self.window_dtype or key_states.dtype, device=key_states.device)
        self.keys = self.sink_keys = self.values = self.sink_values = empty  # no view: it would pin the states
        self.key_state = self.key_codec.prepare(key_states)
        self.value_state = self.value_codec.prepare(value_states)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new states; return what attention must see (codes rebuilt unless attention reads them)."""
        self.key_codec.check(key_states)
        self.value_codec.check(value_states)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys = torch.cat([self.keys.to(key_states.dtype), key_states], dim=-2)
        values = torch.cat([self.values.to(value_states.dtype), value_states], dim=-2)
        past = (self.sink_keys.to(keys.dtype), self.sink_values.to(values.dtype), self.key_codes, self.value_codes)
        self._store(keys, values)
        if getattr(self.config, "_attn_implementation", None) == ATTENTION:
            self.attend = (*past, keys, values)
            hand_over(self)
            return keys, values
        sink_keys, sink_values, key_codes, value_codes = past
        if key_codes is not None:
            sink_keys = torch.cat([sink_keys, self.key_codec.decode(key_codes, self.key_state, keys.dtype)], dim=-2)
            sink_values = torch.cat([sink_values, self.value_codec.decode(value_codes, self.value_state,
                                                                          values.dtype)], dim=-2)
        return torch.cat([sink_keys, keys], dim=-2), torch.cat([sink_values, values], dim=-2)

    def _store(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Move all but the last `window` tokens to the sink (while it has room) or to the codes."""
        n_old = max(keys.shape[-2] - self.window, 0)
        n_sink = min(self.sink - self.sink_keys.shape[-2], n_old)
        store = self.window_dtype or keys.dtype
        if n_sink > 0:
            self.sink_keys = torch.cat([self.sink_keys, keys[..., :n_sink, :].to(store)], dim=-2)
            self.sink_values = torch.cat([self.sink_values, values[..., :n_sink, :].to(store)], dim=-2)
        if n_old > n_sink:
            self.key_codes = _cat(self.key_codes, self.key_codec.encode(keys[..., n_sink:n_old, :], self.key_state))
            self.value_codes = _cat(self.value_codes, self.value_codec.encode(values[..., n_sink:n_old, :],
                                                                              self.value_state))
        self.keys = keys[..., n_old:, :].to(store, copy=True)
        self.values = values[..., n_old:, :].to(store, copy=True)

    @property
    def compressed_length(self) -> int:
        """Number of tokens held as codes."""
        return 0 if self.key_codes is None else self.key_codes[0].factors.shape[2]

    def get_seq_length(self) -> int:
        """Tokens cached (sink, codes and window)."""
        if not self.is_initialized:
            return 0
        return self.sink_keys.shape[-2] + self.compressed_length + self.keys.shape[-2]

    def memory_bytes(self) -> int:
        """Every stored byte: codes, norms/scales, QJL bits, the exact sink and window, per-head side information."""
        if not self.is_initialized:
            return 0
        exact = (self.sink_keys, self.sink_values, self.keys, self.values)
        codes = (self.key_codes or []) + (self.value_codes or [])
        return (sum(t.numel() * t.element_size() for t in exact) + sum(p.nbytes for p in codes)
                + self.key_state.nbytes + self.value_state.nbytes)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply a batch- or token-axis operation to the exact stores and the codes."""
        self.keys, self.values = fn(self.keys), fn(self.values)
        self.sink_keys, self.sink_values = fn(self.sink_keys), fn(self.sink_values)
        if self.key_codes is not None:
            self.key_codes = [p.map(fn) for p in self.key_codes]
            self.value_codes = [p.map(fn) for p in self.value_codes]

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last -tokens_to_remove tokens (window, then codes, then sink); a positive value is refused."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        keep = max(self.get_seq_length() + tokens_to_remove, 0)
        n_sink = min(keep, self.sink_keys.shape[-2])
        n_codes = min(keep - n_sink, self.compressed_length)
        n_window = keep - n_sink - n_codes
        self.sink_keys, self.sink_values = (t[..., :n_sink, :].clone() for t in (self.sink_keys, self.sink_values))
        self.keys, self.values = (t[..., :n_window, :].clone() for t in (self.keys, self.values))
        if n_codes < self.compressed_length:
            self.key_codes = [p.map(lambda t: t[:, :, :n_codes].clone()) for p in self.key_codes]
            self.value_codes = [p.map(lambda t: t[:, :, :n_codes].clone()) for p in self.value_codes]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch for beam search (codes are per token, so this is exact)."""
        if self.is_initialized:
            self._apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every batch entry `repeats` times."""
        if self.is_initialized:
            self._apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only these batch entries."""
        if self.is_initialized:
            self._apply(lambda t: t[indices])

    def reset(self) -> None:
        """Forget every token and the side information (the next prefill chooses it again)."""
        super().reset()
        self.key_codes = self.value_codes = self.key_state = self.value_state = self.attend = None
        self.sink_keys = self.sink_values = None


class TurboQuantCache(Cache):
    """A drop-in transformers Cache with TurboQuant-compressed keys and values.

    config: the model's config (a decoder with full attention in every layer). key_bits, value_bits: 1..8,
    or b + 0.5 for the paper's mixed precision (a quarter of each head's channels, the largest by prefill
    norm, at b + 1 bits). The default 4 + 3 costs the bytes of 3.5 + 3.5 and measured better (keys matter
    more; docs/kvcache.md). window: recent tokens kept exact; sink: first tokens kept exact (attention sinks).
    key_scale, value_scale: per-vector scale of the
    MSE codes ("unbiased" keeps <k^, k> = ||k||^2, "lsq" is the best reconstruction, "none" the paper's).
    qjl: keys as TurboQuantProd (bits - 1 MSE bits + a 1-bit residual sketch), for comparison.
    seed, rotation: the codec's rotation ("fht-kac-3" default, or "dense-qr"). window_dtype: storage dtype of
    the exact tokens (default: the states' own dtype; float16 halves them for a float32 model).
    """

    def __init__(self, config: object, key_bits: float = 4, value_bits: float = 3, window: int = DEFAULT_WINDOW,
                 sink: int = DEFAULT_SINK,
                 key_scale: str = "unbiased", value_scale: str = "lsq", qjl: bool = False, seed: int = 0,
                 rotation: str | None = None,
                 window_dtype: torch.dtype | None = None) -> None:
        text = config.get_text_config(decoder=True)
        kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
        if kinds != {"full_attention"}:
            raise ValueError(f"TurboQuantCache needs full attention in every layer, this model has {sorted(kinds)}")
        for name, n in (("window", window), ("sink", sink)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {n!r}")
        if window_dtype is not None and not (isinstance(window_dtype, torch.dtype) and window_dtype.is_floating_point):
            raise ValueError(f"window_dtype must be a torch float dtype or None, got {window_dtype!r}")
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.key_bits, self.value_bits, self.window = key_bits, value_bits, window
        keys = HeadCodec(head_dim, key_bits, seed, "none" if qjl else key_scale, qjl, rotation)
        values = HeadCodec(head_dim, value_bits, seed, value_scale, False, rotation)
        super().__init__(layers=[TurboQuantLayer(keys, values, window, sink, window_dtype, text)
                                 for _ in range(text.num_hidden_layers)])

    def memory_bytes(self) -> int:
        """Bytes stored by all layers: codes, norms/scales, window and outlier channel lists."""
        return sum(layer.memory_bytes() for layer in self.layers)


def _cat(old: list[Packed] | None, new: list[Packed]) -> list[Packed]:
    return new if old is None else [Packed.cat(a, b) for a, b in zip(old, new)]
