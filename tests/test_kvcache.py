"""TurboQuantCache on tiny random-weight Llama models (CPU; the device tests also run where CUDA is available)."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

from tqsearch import TurboQuantMSE, TurboQuantProd

torch = pytest.importorskip("torch")
with warnings.catch_warnings():  # transformers' first import trips torch deprecation warnings (not ours)
    warnings.simplefilter("ignore", DeprecationWarning)
    transformers = pytest.importorskip("transformers")
    from tqsearch.kvcache import ATTENTION, TurboQuantCache
    from tqsearch.kvcache.codec import (
        GroupCodec,
        HeadCodec,
        _unpack_torch,
        pack_bits,
        parse_bits,
        unpack_bits,
    )

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_llama(head_dim: int = 16, layers: int = 2, seed: int = 0, init: float = 0.05):
    """A random Llama; init above the default 0.02 peaks its attention, so key/value errors show in the logits."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
                                   max_position_embeddings=256, initializer_range=init, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


def prompts(batch: int = 2, length: int = 40, seed: int = 1) -> tuple:
    """Random token ids, the second row left-padded by 5 tokens, and their attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 96, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    if batch > 1:
        ids[1, :5], mask[1, :5] = 0, 0
    return ids, mask


# ----------------------------------------------------------------------------- codec


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("dim", [5, 16, 48, 64])
def test_pack_roundtrip_and_native_layout(bits, dim):
    idx = torch.randint(0, 1 << bits, (2, 3, 7, dim), generator=torch.Generator().manual_seed(bits))
    packed = pack_bits(idx, bits)
    assert packed.shape[-1] == (dim * bits + 7) // 8
    assert torch.equal(unpack_bits(packed, dim, bits).long(), idx)  # native unpacker
    assert torch.equal(_unpack_torch(packed, dim, bits).long(), idx)  # torch unpacker (GPU path)


@pytest.mark.parametrize("scale", ["none", "unbiased", "lsq"])
def test_group_codec_is_the_project_codec(scale):
    x = np.random.default_rng(0).standard_normal((300, 48)).astype(np.float32) * 3
    ref = TurboQuantMSE(48, 3, seed=5, scale=scale)
    codes = ref.encode(x)
    ours = GroupCodec(48, 3, seed=5, scale=scale)
    packed = ours.encode(torch.from_numpy(x)[None, None])
    assert np.array_equal(packed.codes[0, 0].numpy(), codes.packed)  # byte-identical codes
    factors = codes.norms * (codes.scales if codes.scales is not None else 1)
    np.testing.assert_allclose(packed.factors[0, 0].float().numpy(), factors, rtol=1e-3)
    np.testing.assert_allclose(ours.decode(packed, torch.float32)[0, 0].numpy(), ref.decode(codes), atol=5e-3)


def test_qjl_codec_is_turboquant_prod():
    x = np.random.default_rng(1).standard_normal((200, 32)).astype(np.float32)
    ref = TurboQuantProd(32, 3, seed=2)
    ours = GroupCodec(32, 3, seed=2, qjl=True)
    got = ours.decode(ours.encode(torch.from_numpy(x)[None, None]), torch.float32)[0, 0].numpy()
    np.testing.assert_allclose(got, ref.decode(ref.encode(x)), atol=5e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bits,qjl", [(3, False), (2.5, False), (3.5, True)])
def test_compressed_scores_equal_rebuilt_keys(device, bits, qjl):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 50, 32, generator=g).to(device)
    codec = HeadCodec(32, bits, seed=1, scale="none" if qjl else "lsq", qjl=qjl)
    state = codec.prepare(x)
    packed = codec.encode(x, state)
    rebuilt = codec.decode(packed, state, torch.float32)
    q = torch.randn(2, 3, 4, 32, generator=g).to(device)
    w = torch.softmax(torch.randn(2, 3, 4, 50, generator=g), dim=-1).to(device)
    torch.testing.assert_close(codec.scores(q, packed, state), q @ rebuilt.transpose(-1, -2), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(codec.weighted_sum(w, packed, state), w @ rebuilt, atol=1e-5, rtol=1e-4)
    err = (rebuilt - x).square().sum() / x.square().sum()
    assert err < {3: 0.05, 2.5: 0.1, 3.5: 0.2}[bits]  # QJL buys unbiased scores with variance


def test_outliers_are_the_largest_channels():
    x = torch.randn(1, 2, 100, 16, generator=torch.Generator().manual_seed(4))
    x[:, 0, :, [3, 9, 12, 14]] *= 20
    x[:, 1, :, [0, 1, 2, 5]] *= 20
    perm = HeadCodec(16, 2.5).prepare(x).perm
    assert perm[0, :4].tolist() == [3, 9, 12, 14] and perm[1, :4].tolist() == [0, 1, 2, 5]
    assert sorted(perm[0].tolist()) == list(range(16))


def test_parse_bits():
    assert parse_bits(3, 64) == [(64, 3)]
    assert parse_bits(2.5, 128) == [(32, 3), (96, 2)]
    assert parse_bits(3.5, 64) == [(16, 4), (48, 3)]
    for bad in (0, 9, 2.25, 8.5):
        with pytest.raises(ValueError, match="bits"):
            parse_bits(bad, 64)
    with pytest.raises(TypeError):
        parse_bits("3", 64)


# ----------------------------------------------------------------------------- the cache in a model


@pytest.fixture(scope="module")
def model16():
    return tiny_llama(head_dim=16)


def greedy(model, cache, ids, mask, new=12, **kw):
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, past_key_values=cache,
                              pad_token_id=0, **kw)


@pytest.mark.parametrize("attn", ["sdpa", ATTENTION])
def test_8_bits_generates_the_full_cache_tokens(model16, attn):
    model16.set_attn_implementation(attn)
    ids, mask = prompts()
    full = greedy(model16, transformers.DynamicCache(config=model16.config), ids, mask, new=20)
    ours = greedy(model16, TurboQuantCache(model16.config, key_bits=8, value_bits=8, window=4, sink=2), ids, mask,
                  new=20)
    model16.set_attn_implementation("sdpa")
    assert torch.equal(ours, full)


def test_head_dim_64_mixed_precision_generates_the_same_tokens():
    model = tiny_llama(head_dim=64, seed=2)
    ids, mask = prompts(length=30)
    full = greedy(model, transformers.DynamicCache(config=model.config), ids, mask)
    ours = greedy(model, TurboQuantCache(model.config, key_bits=7.5, value_bits=7.5, window=2), ids, mask)
    assert torch.equal(ours, full)


def next_logits(model, cache, ids, mask, split=32):
    """Log-probs of the tokens after `split`, fed as a second call that reads the (compressed) prefix."""
    with torch.no_grad():
        model(ids[:, :split], attention_mask=mask[:, :split], past_key_values=cache)
        out = model(ids[:, split:], attention_mask=mask, past_key_values=cache).logits
    return torch.log_softmax(out, dim=-1)


@pytest.mark.parametrize("attn", ["sdpa", ATTENTION])
def test_4_bits_logits_stay_close(model16, attn):
    model16.set_attn_implementation(attn)
    ids, mask = prompts(length=48)
    full = next_logits(model16, transformers.DynamicCache(config=model16.config), ids, mask)
    errs = {b: (next_logits(model16, TurboQuantCache(model16.config, key_bits=b, value_bits=b, window=0, sink=0),
                            ids, mask) - full).abs().max().item() for b in (2, 4, 8)}
    model16.set_attn_implementation("sdpa")
    assert errs[4] < 0.15
    assert errs[8] < 0.01
    assert errs[2] > 2 * errs[4]  # the test can see quantization error at all


def test_compressed_attention_matches_rebuilt_attention(model16, monkeypatch):
    ids, mask = prompts(length=48)
    def make():
        return TurboQuantCache(model16.config, key_bits=3.5, value_bits=2, window=3, sink=1)

    rebuilt = next_logits(model16, make(), ids, mask)
    monkeypatch.setattr(HeadCodec, "decode", lambda *a: pytest.fail("compressed attention rebuilt the keys"))
    model16.set_attn_implementation(ATTENTION)
    try:
        direct = next_logits(model16, make(), ids, mask)
    finally:
        model16.set_attn_implementation("sdpa")
    torch.testing.assert_close(direct, rebuilt, atol=1e-4, rtol=1e-4)


def test_beam_search_matches_the_full_cache(model16):
    ids, mask = prompts()
    full = greedy(model16, transformers.DynamicCache(config=model16.config), ids, mask, num_beams=3)
    ours = greedy(model16, TurboQuantCache(model16.config, key_bits=8, value_bits=8, window=4), ids, mask,
                  num_beams=3)
    assert torch.equal(ours, full)


def test_prompt_lookup_decoding_crops_the_cache(model16):
    ids = torch.tensor([[5, 6, 7, 8, 9, 10] * 6])  # repetitive: candidates are proposed, some rejected
    mask = torch.ones_like(ids)
    full = greedy(model16, transformers.DynamicCache(config=model16.config), ids, mask, new=16)
    ours = greedy(model16, TurboQuantCache(model16.config, key_bits=8, value_bits=8, window=3), ids, mask, new=16,
                  prompt_lookup_num_tokens=4)
    assert torch.equal(ours, full)


def test_crop_removes_window_then_codes_then_sink(model16):
    ids, _ = prompts(batch=1, length=30)
    cache = TurboQuantCache(model16.config, key_bits=4, value_bits=4, window=5, sink=3)
    with torch.no_grad():
        model16(ids, past_key_values=cache)
    layer = cache.layers[0]
    assert (layer.sink_keys.shape[-2], layer.compressed_length, layer.keys.shape[-2]) == (3, 22, 5)
    cache.crop(-8)
    assert (layer.sink_keys.shape[-2], layer.compressed_length, layer.keys.shape[-2]) == (3, 19, 0)
    assert cache.get_seq_length() == 22
    cache.crop(-20)
    assert (layer.sink_keys.shape[-2], layer.compressed_length, cache.get_seq_length()) == (2, 0, 2)
    with pytest.raises(ValueError, match="negative"):
        cache.crop(3)


def test_batch_select_and_repeat(model16):
    ids, mask = prompts(length=20)
    cache = TurboQuantCache(model16.config, key_bits=3, value_bits=3, window=4)
    with torch.no_grad():
        model16(ids, attention_mask=mask, past_key_values=cache)
    total = cache.memory_bytes()
    side = sum(layer.key_state.nbytes + layer.value_state.nbytes for layer in cache.layers)
    window, codes = cache.layers[1].keys.clone(), cache.layers[1].key_codes[0].codes.clone()
    cache.batch_repeat_interleave(3)
    assert cache.layers[1].key_codes[0].codes.shape[0] == 6
    assert cache.memory_bytes() - side == 3 * (total - side)
    cache.batch_select_indices(torch.tensor([0, 3]))
    assert cache.memory_bytes() == total
    assert torch.equal(cache.layers[1].keys, window) and torch.equal(cache.layers[1].key_codes[0].codes, codes)


def test_memory_bytes_hand_count(model16):
    b, t, window, sink = 2, 40, 6, 4
    ids, mask = prompts(batch=b, length=t)
    cache = TurboQuantCache(model16.config, key_bits=3.5, value_bits=2, window=window, sink=sink,
                            window_dtype=torch.float16)
    with torch.no_grad():
        model16(ids, attention_mask=mask, past_key_values=cache)
    heads, layers, n = 2, 2, t - window - sink
    # keys 3.5 bits at head_dim 16: 4 channels x 4 bits (2 bytes) + 12 x 3 bits (5 bytes), a float16 per group
    key_bytes = (2 + 2) + (5 + 2)
    value_bytes = 16 * 2 // 8 + 2  # 2 bits, one float16
    exact = (window + sink) * 16 * 2 * 2  # keys and values in float16
    outlier_lists = 16 * 2  # int16 channel order per head (keys only: 2 bits is not mixed)
    per_layer = heads * (b * (n * (key_bytes + value_bytes) + exact) + outlier_lists)
    assert cache.memory_bytes() == layers * per_layer
    assert cache.get_seq_length() == t


def test_bad_input_is_refused(model16):
    with pytest.raises(ValueError, match="bits"):
        TurboQuantCache(model16.config, key_bits=2.3)
    with pytest.raises(ValueError, match="window"):
        TurboQuantCache(model16.config, window=-1)
    with pytest.raises(ValueError, match="qjl"):
        TurboQuantCache(model16.config, key_bits=1, qjl=True)
    cache = TurboQuantCache(model16.config)
    with pytest.raises(ValueError, match="head_dim"):
        cache.update(torch.zeros(1, 2, 3, 32), torch.zeros(1, 2, 3, 32), 0)


def test_importing_tqsearch_does_not_import_torch():
    code = "import sys, tqsearch; print('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
