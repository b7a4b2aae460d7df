"""Attention straight from TurboQuant-compressed keys and values, registered in transformers as "turboquant".

Scores are <R q, y_t> * factor_t in each channel group's rotated domain and the output is R^T sum_t p_t
factor_t y_t, so the compressed tokens are never rebuilt (no per-token inverse rotation); the full-precision
window and the current tokens are attended as usual. Enable it with `model.set_attn_implementation(ATTENTION)`.
For any other cache (or layer) it falls back to torch SDPA, so switching it on is always safe.
"""

from __future__ import annotations

import threading

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

__all__ = ["ATTENTION", "compressed_attention"]

ATTENTION = "turboquant"
_CURRENT = threading.local()  # the layer whose update() just ran, with what its attention must read


def hand_over(layer: object) -> None:
    """Record that `layer` returned compressed-attention states; the next attention call picks them up."""
    _CURRENT.layer = layer


def compressed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                         **kwargs: object) -> tuple[torch.Tensor, None]:
    """An AttentionInterface function: (B, Hq, Q, d) queries -> (B, Q, Hq, d) outputs, reading the codes directly."""
    layer, _CURRENT.layer = getattr(_CURRENT, "layer", None), None
    pending = getattr(layer, "attend", None)
    if pending is None or pending[4] is not key:  # not a TurboQuantCache layer's output: plain SDPA
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    layer.attend = None
    sink_keys, sink_values, key_codes, value_codes = pending[:4]
    if key_codes is None:
        return sdpa_attention_forward(module, query, torch.cat([sink_keys, key], dim=-2),
                                      torch.cat([sink_values, value], dim=-2), attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    b, hq, nq, d = query.shape
    hkv = key.shape[1]
    q = query.reshape(b, hkv, hq // hkv * nq, d)
    s = torch.cat([q @ sink_keys.transpose(-1, -2), layer.key_codec.scores(q, key_codes, layer.key_state),
                   q @ key.transpose(-1, -2)], dim=-1)
    s = s.to(torch.float32) * (d**-0.5 if scaling is None else scaling)
    p = torch.softmax(_masked(s.view(b, hkv, hq // hkv, nq, -1), attention_mask), dim=-1)
    p = p.to(query.dtype).view(b, hkv, hq // hkv * nq, -1)
    n_sink, n_codes = sink_keys.shape[-2], key_codes[0].factors.shape[-1]
    p_sink, p_codes, p_exact = p.split([n_sink, n_codes, key.shape[-2]], dim=-1)
    out = p_sink @ sink_values + layer.value_codec.weighted_sum(p_codes, value_codes, layer.value_state) \
        + p_exact @ value
    return out.view(b, hq, nq, d).transpose(1, 2).contiguous(), None


def _masked(s: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Apply a (B, 1, Q, T) bool/additive mask (None = causal, aligned to the last key) to (B, H, G, Q, T) scores."""
    nq, t = s.shape[-2:]
    if mask is None:
        if nq == 1:
            return s
        mask = torch.ones(nq, t, dtype=torch.bool, device=s.device).tril(t - nq)
    else:
        mask = mask[..., :t].unsqueeze(2)
    if mask.dtype == torch.bool:  # a finite fill keeps fully masked (padding) rows free of NaN
        return s.masked_fill(~mask, torch.finfo(s.dtype).min)
    return s + mask.to(s.dtype)


AttentionInterface.register(ATTENTION, compressed_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)
