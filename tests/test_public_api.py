import tqsearch


def test_all_is_sorted_complete_and_importable():
    assert tqsearch.__all__ == sorted(tqsearch.__all__)
    for name in tqsearch.__all__:
        assert hasattr(tqsearch, name), name
    public = {n for n in vars(tqsearch) if not n.startswith("_") and n not in tqsearch.__all__}
    modules = {"codebooks", "collection", "distributed", "errors", "fde", "flat", "hnsw", "kvcache", "multivector", "params", "quantizer", "relevance", "rotation", "tiers", "cli", "datasets", "demo", "embed", "ingest", "integrations", "server"}
    assert public <= modules, public - modules
