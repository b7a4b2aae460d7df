"""TurboQuant codes for torch tensors, so a KV cache can encode and score on any torch device.

`GroupCodec` is the project's codec (same seeded rotation, Lloyd-Max codebook and per-vector scale as
`TurboQuantMSE`, or the QJL stage of `TurboQuantProd`) written in torch, on the last axis of (..., dim)
tensors. Codes are packed exactly as the codec packs them (csrc/pack-inl.h), so on CPU the native unpack
and scan kernels read them; the norm times the scale is one float16 per vector.
`HeadCodec` is the paper's mixed precision for one attention head width: the channels with the largest
prefill norm ("outliers") at one bit more than the rest, each set with its own GroupCodec. Both score
queries against codes in the rotated domain, so attention never has to rebuild the keys (see attention.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from .. import _core
from ..quantizer import SCALES, TurboQuantMSE, TurboQuantProd

__all__ = ["GroupCodec", "HeadCodec", "HeadState", "Packed", "pack_bits", "parse_bits", "unpack_bits"]

_F16_MAX = float(torch.finfo(torch.float16).max)


@dataclass(eq=False)
class Packed:
    """The stored form of (B, H, T) vectors of one channel group; every tensor has T on axis 2.

    codes: (B, H, T, ceil(dim*bits/8)) uint8 in the codec's layout. factors: (B, H, T) float16 ||x|| * scale.
    signs, residuals: QJL sign bits (B, H, T, ceil(dim/8)) uint8 and ||r|| float16, or None.
    """

    codes: torch.Tensor
    factors: torch.Tensor
    signs: torch.Tensor | None = None
    residuals: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the codes and every per-vector float."""
        return sum(t.numel() * t.element_size() for f in fields(self) if (t := getattr(self, f.name)) is not None)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Packed:
        """Apply a batch/token-axis operation (slice, index_select, repeat) to every tensor."""
        return replace(self, **{f.name: fn(t) for f in fields(self) if (t := getattr(self, f.name)) is not None})

    @staticmethod
    def cat(a: Packed | None, b: Packed) -> Packed:
        """Append b's tokens after a's."""
        if a is None:
            return b
        return replace(a, **{f.name: torch.cat([getattr(a, f.name), getattr(b, f.name)], dim=2)
                             for f in fields(a) if getattr(a, f.name) is not None})


def pack_bits(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack b-bit indices (..., d) into (..., ceil(d*b/8)) uint8 in the codec's layout (csrc/pack-inl.h)."""
    d = idx.shape[-1]
    x = torch.nn.functional.pad(idx.to(torch.int64), (0, -d % 8)).unflatten(-1, (-1, 8))
    words = (x << (torch.arange(8, device=idx.device) * bits)).sum(-1, keepdim=True)  # 8 indices per word
    out = (words >> (torch.arange(bits, device=idx.device) * 8)) & 255
    return out.to(torch.uint8).flatten(-2)[..., : (d * bits + 7) // 8]


def unpack_bits(codes: torch.Tensor, dim: int, bits: int) -> torch.Tensor:
    """Inverse of `pack_bits`: (..., ceil(dim*b/8)) uint8 -> (..., dim) int32 indices."""
    if codes.device.type != "cpu":
        return _unpack_torch(codes, dim, bits)
    flat = codes.reshape(-1, codes.shape[-1]).contiguous()
    idx = np.empty((len(flat), dim), dtype=np.uint8)
    _core.unpack(flat.numpy(), dim, bits, idx)  # the codec's native unpacker
    return torch.from_numpy(idx).to(torch.int32).view(*codes.shape[:-1], dim)


def _unpack_torch(codes: torch.Tensor, dim: int, bits: int) -> torch.Tensor:
    """`unpack_bits` in torch ops, for any device."""
    n8 = -(-dim // 8)
    x = torch.nn.functional.pad(codes, (0, n8 * bits - codes.shape[-1])).unflatten(-1, (n8, bits)).to(torch.int64)
    words = (x << (torch.arange(bits, device=codes.device) * 8)).sum(-1, keepdim=True)
    idx = (words >> (torch.arange(8, device=codes.device) * bits)) & ((1 << bits) - 1)
    return idx.flatten(-2)[..., :dim].to(torch.int32)


def parse_bits(bits: float, dim: int) -> list[tuple[int, int]]:
    """Channel groups (count, bits) for a width: b -> all at b; b + 0.5 -> dim/4 outliers at b + 1, rest at b."""
    if isinstance(bits, bool) or not isinstance(bits, (int, float)):
        raise TypeError(f"bits must be a number such as 3 or 3.5, got {type(bits).__name__}")
    whole = math.floor(bits)
    if bits - whole not in (0.0, 0.5) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer 1..8 or a half-integer 1.5..7.5 (mixed precision), got {bits}")
    if bits == whole:
        return [(dim, whole)]
    outliers = max(1, round(dim / 4))
    if outliers >= dim:
        raise ValueError(f"mixed precision ({bits} bits) needs head_dim >= 2, got {dim}")
    return [(outliers, whole + 1), (dim - outliers, whole)]


class GroupCodec:
    """TurboQuant on the last axis of torch tensors: rotate, Lloyd-Max code each coordinate, keep ||x|| * scale.

    scale: "none", "unbiased" (<x, x^> = ||x||^2) or "lsq" (best reconstruction), as in TurboQuantMSE.
    qjl=True is TurboQuantProd: bits-1 MSE bits plus a 1-bit sign sketch of the residual (unbiased scores).
    """

    def __init__(self, dim: int, bits: int, seed: int = 0, scale: str = "none", qjl: bool = False,
                 rotation: str | None = None) -> None:
        if qjl and bits < 2:
            raise ValueError("qjl needs bits >= 2 (one bit goes to the sign sketch)")
        if qjl and scale != "none":
            raise ValueError("qjl codes are unbiased by construction; use scale='none' with qjl=True")
        self.dim, self.bits, self.qjl = dim, bits, qjl
        self.mse_bits = bits - 1 if qjl else bits
        mse = TurboQuantMSE(dim, self.mse_bits, seed, scale, rotation)
        self.scale, self._mse = mse.scale, mse
        self._host = {"rotation": torch.from_numpy(mse.rotation.matrix()),
                      "centroids": torch.from_numpy(mse.codebook.centroids.copy()),
                      "boundaries": torch.from_numpy(mse.codebook.boundaries.copy())}
        if qjl:
            self._host["sketch"] = torch.from_numpy(TurboQuantProd(dim, bits, seed, mse.rotation).sketch.copy())
        self._consts: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}
        self._qjl_scale = math.sqrt(math.pi / 2) / dim

    def consts(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Rotation, codebook (and sketch) on a device and dtype, built once."""
        key = (device, dtype)
        if key not in self._consts:
            self._consts[key] = {k: v.to(device, dtype if k != "boundaries" else torch.float32)
                                 for k, v in self._host.items()}
        return self._consts[key]

    def encode(self, x: torch.Tensor) -> Packed:
        """Compress (B, H, T, dim) vectors; zero vectors get factor 0."""
        c = self.consts(x.device, torch.float32)
        x = x.to(torch.float32)
        norms = torch.linalg.vector_norm(x, dim=-1)
        r = (x / norms.clamp_min(1e-30).unsqueeze(-1)) @ c["rotation"].T
        idx = torch.bucketize(r, c["boundaries"])
        y = c["centroids"][idx]
        factors = norms * self._scale_of(r, y)
        packed = Packed(pack_bits(idx, self.mse_bits), _to_f16(factors, "key/value norms"))
        if self.qjl:
            res = r - y
            packed.signs = pack_bits((res @ c["sketch"].T) > 0, 1)
            packed.residuals = _to_f16(torch.linalg.vector_norm(res, dim=-1), "QJL residual norms")
        return packed

    def _scale_of(self, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The per-vector scale of the reconstruction norm * scale * R^T y."""
        if self.scale == "none":
            return torch.ones_like(r[..., 0])
        dot = (r * y).sum(-1)
        if self.scale == "unbiased":
            return torch.where(dot > 1e-30, 1 / dot.clamp_min(1e-30), 1.0)
        sq = (y * y).sum(-1)
        return torch.where(sq > 0, dot / sq.clamp_min(1e-30), 1.0)

    def rotated(self, p: Packed, dtype: torch.dtype) -> torch.Tensor:
        """The codebook vectors y of the codes (rotated domain, without factors): (B, H, T, dim)."""
        idx = unpack_bits(p.codes, self.dim, self.mse_bits)
        return self.consts(p.codes.device, dtype)["centroids"].index_select(0, idx.flatten()).view(idx.shape)

    def _signs(self, p: Packed, dtype: torch.dtype) -> torch.Tensor:
        return unpack_bits(p.signs, self.dim, 1).to(dtype) * 2 - 1

    def decode(self, p: Packed, dtype: torch.dtype) -> torch.Tensor:
        """Reconstruct (B, H, T, dim) vectors factor * R^T (y [+ ||r|| sqrt(pi/2)/d S^T signs])."""
        c = self.consts(p.codes.device, dtype)
        y = self.rotated(p, dtype)
        if self.qjl:
            y = y + (p.residuals.to(dtype) * self._qjl_scale).unsqueeze(-1) * (self._signs(p, dtype) @ c["sketch"])
        return (y * p.factors.to(dtype).unsqueeze(-1)) @ c["rotation"]

    def rotate(self, q: torch.Tensor) -> torch.Tensor:
        """Queries into the rotated domain: (..., dim) -> (..., dim)."""
        return q @ self.consts(q.device, q.dtype)["rotation"].T

    def scores(self, q_rot: torch.Tensor, p: Packed) -> torch.Tensor:
        """<q, x^> for rotated queries (B, H, Q, dim) against codes (B, H, T): (B, H, Q, T), keys never rebuilt."""
        dtype = q_rot.dtype
        if q_rot.device.type == "cpu" and dtype == torch.float32:
            s = self._scan(q_rot, p)
        else:
            s = (q_rot @ self.rotated(p, dtype).transpose(-1, -2)) * p.factors.to(dtype).unsqueeze(-2)
        if self.qjl:
            sq = q_rot @ self.consts(q_rot.device, dtype)["sketch"].T
            w = (p.factors.to(dtype) * p.residuals.to(dtype) * self._qjl_scale).unsqueeze(-2)
            s = s + (sq @ self._signs(p, dtype).transpose(-1, -2)) * w
        return s

    def _scan(self, q_rot: torch.Tensor, p: Packed) -> torch.Tensor:
        """The codec's native scan kernel, one (batch, head) at a time: factor_t * <q', centroids[codes_t]>."""
        b, h, nq, _ = q_rot.shape
        out = torch.empty(b, h, nq, p.codes.shape[2])
        q, codes, factors = q_rot.contiguous().numpy(), p.codes.contiguous().numpy(), p.factors.float().numpy()
        for i in range(b):
            for j in range(h):
                out[i, j] = torch.from_numpy(self._mse.scan_rotated(q[i, j], codes[i, j], factors[i, j],
                                                                    torch.get_num_threads()))
        return out

    def weighted_sum(self, weights: torch.Tensor, p: Packed) -> torch.Tensor:
        """sum_t w_t x^_t for weights (B, H, Q, T): (B, H, Q, dim), one inverse rotation per query, not per token."""
        dtype = weights.dtype
        c = self.consts(weights.device, dtype)
        wf = weights * p.factors.to(dtype).unsqueeze(-2)
        y = wf @ self.rotated(p, dtype)
        if self.qjl:
            wr = wf * (p.residuals.to(dtype) * self._qjl_scale).unsqueeze(-2)
            y = y + (wr @ self._signs(p, dtype)) @ c["sketch"]
        return y @ c["rotation"]


@dataclass(eq=False)
class HeadState:
    """Side information of one layer's keys or values, chosen from the first (prefill) states.

    perm: (H, head_dim) int16 channel order per head, outliers first (mixed precision only).
    """

    perm: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return 0 if self.perm is None else self.perm.numel() * self.perm.element_size()


class HeadCodec:
    """Codes for one attention head width: one GroupCodec, or outlier and regular channel groups (x.5 bits).

    With mixed precision the outlier channels (largest energy) are chosen per head from the first
    (prefill) states.
    """

    def __init__(self, head_dim: int, bits: float, seed: int = 0, scale: str = "none", qjl: bool = False,
                 rotation: str | None = None) -> None:
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
            raise ValueError(f"head_dim must be a positive integer, got {head_dim!r}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        self.head_dim, self.bits = head_dim, bits
        self.groups = [GroupCodec(n, b, seed + i, scale, qjl, rotation) for i, (n, b) in
                       enumerate(parse_bits(bits, head_dim))]
        self.mixed = len(self.groups) > 1

    def check(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is (B, H, T, head_dim)."""
        if x.ndim != 4 or x.shape[-1] != self.head_dim:
            raise ValueError(f"expected key/value states of shape (batch, heads, tokens, {self.head_dim}), "
                             f"got {tuple(x.shape)} (head_dim mismatch?)")

    def prepare(self, x: torch.Tensor) -> HeadState:
        """Per-head outlier channels (largest energy over batch and tokens) of states x (B, H, T, d)."""
        if not self.mixed:
            return HeadState()
        energy = x.to(torch.float32).square().sum(dim=(0, 2))  # (H, d)
        top = energy.topk(self.groups[0].dim, dim=-1).indices.sort(dim=-1).values
        rest = torch.ones_like(energy, dtype=torch.bool).scatter_(-1, top, False)
        others = torch.arange(self.head_dim, device=x.device).expand_as(energy)[rest].view(len(energy), -1)
        return HeadState(torch.cat([top, others], dim=-1).to(torch.int16))

    def _split(self, x: torch.Tensor, perm: torch.Tensor | None) -> list[torch.Tensor]:
        if perm is None:
            return [x]
        x = x.gather(-1, _expand(perm, x))
        return list(x.split([g.dim for g in self.groups], dim=-1))

    def _merge(self, parts: list[torch.Tensor], perm: torch.Tensor | None) -> torch.Tensor:
        if perm is None:
            return parts[0]
        x = torch.cat(parts, dim=-1)
        return torch.empty_like(x).scatter_(-1, _expand(perm, x), x)

    def encode(self, x: torch.Tensor, state: HeadState) -> list[Packed]:
        """Compress (B, H, T, head_dim) states, one Packed per channel group."""
        return [g.encode(part) for g, part in zip(self.groups, self._split(x, state.perm))]

    def decode(self, packed: list[Packed], state: HeadState, dtype: torch.dtype) -> torch.Tensor:
        """Rebuild (B, H, T, head_dim) states."""
        return self._merge([g.decode(p, dtype) for g, p in zip(self.groups, packed)], state.perm)

    def scores(self, q: torch.Tensor, packed: list[Packed], state: HeadState) -> torch.Tensor:
        """<q, k^> for queries (B, H, Q, head_dim) against the codes: (B, H, Q, T)."""
        parts = self._split(q, state.perm)
        return sum(g.scores(g.rotate(part), p) for g, part, p in zip(self.groups, parts, packed))

    def weighted_sum(self, weights: torch.Tensor, packed: list[Packed], state: HeadState) -> torch.Tensor:
        """sum_t w_t v^_t for weights (B, H, Q, T): (B, H, Q, head_dim)."""
        return self._merge([g.weighted_sum(weights, p) for g, p in zip(self.groups, packed)], state.perm)


def _expand(perm: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """perm (H, d) as a gather index for x (B, H, T, d)."""
    return perm.to(device=x.device, dtype=torch.int64)[None, :, None, :].expand(x.shape)


def _to_f16(x: torch.Tensor, what: str) -> torch.Tensor:
    """Cast to float16, refusing values that would overflow (or NaN/Inf already there)."""
    if not bool((x.abs() <= _F16_MAX).all()):  # also false for NaN
        raise ValueError(f"{what} must be finite and below {_F16_MAX:.0f} to be stored as float16")
    return x.to(torch.float16)
