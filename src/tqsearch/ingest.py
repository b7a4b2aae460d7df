"""Bulk ingest into a collection from files or iterators of batches, without holding the corpus in memory.

Sources (`read_batches`):
    .npy     an (n, dim) float array, memory-mapped; ids are the row numbers ("0", "1", ...)
    .jsonl   one JSON object per line: {"id": str, "vector": [floats], "metadata": {...}, "document": str}
             ("metadata" and "document" optional)
    .parquet columns id, vector (list of floats) and optionally document; every other column becomes a
             metadata field (needs pyarrow: pip install "tqsearch[ingest]")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

Batch = dict[str, Any]  # {"ids": [...], "vectors": (n, dim), "metadatas": [...] | None, "documents": [...] | None}
BATCH = 10_000


def ingest(collection: Any, batches: Iterable[Batch], total: int | None = None, progress: bool = True) -> int:
    """Upsert every batch (each acknowledged durably before the next); returns the points written.

    A progress bar is shown when tqdm is installed and `progress` is true.
    """
    bar = _progress(total, progress)
    written = 0
    try:
        for batch in batches:
            collection.upsert(batch["ids"], batch["vectors"], batch.get("metadatas"), batch.get("documents"))
            written += len(batch["ids"])
            if bar is not None:
                bar.update(len(batch["ids"]))
    finally:
        if bar is not None:
            bar.close()
    return written


def read_batches(path: str | Path, batch: int = BATCH) -> tuple[Iterator[Batch], int | None]:
    """Batches of points from a .npy, .jsonl or .parquet file, and the number of points when known."""
    path = Path(path)
    readers = {".npy": _npy, ".jsonl": _jsonl, ".parquet": _parquet}
    reader = readers.get(path.suffix)
    if reader is None:
        raise InvalidArgumentError(f"{path}: cannot ingest {path.suffix or 'a file without suffix'!r} "
                                   f"(expected one of {', '.join(readers)})")
    if not path.is_file():
        raise InvalidArgumentError(f"{path}: no such file")
    return reader(path, batch)


def _npy(path: Path, batch: int) -> tuple[Iterator[Batch], int]:
    vectors = np.load(path, mmap_mode="r")
    if vectors.ndim != 2:
        raise InvalidArgumentError(f"{path}: expected an (n, dim) array, got shape {vectors.shape}")

    def batches() -> Iterator[Batch]:
        for start in range(0, len(vectors), batch):
            rows = np.asarray(vectors[start : start + batch], dtype=np.float32)
            yield {"ids": [str(i) for i in range(start, start + len(rows))], "vectors": rows}

    return batches(), len(vectors)


def _jsonl(path: Path, batch: int) -> tuple[Iterator[Batch], None]:
    def batches() -> Iterator[Batch]:
        rows: list[dict[str, Any]] = []
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    rows.append(_json_row(line, path, number))
                if len(rows) == batch:
                    yield _batch(rows)
                    rows = []
        if rows:
            yield _batch(rows)

    return batches(), None


def _json_row(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError as e:
        raise InvalidArgumentError(f"{path}:{number}: not JSON ({e})") from None
    if not isinstance(row, dict) or "id" not in row or "vector" not in row:
        raise InvalidArgumentError(f"{path}:{number}: expected an object with 'id' and 'vector'")
    return row


def _batch(rows: list[dict[str, Any]]) -> Batch:
    return {"ids": [r["id"] for r in rows], "vectors": np.array([r["vector"] for r in rows], dtype=np.float32),
            "metadatas": [r.get("metadata") or {} for r in rows], "documents": [r.get("document") for r in rows]}


def _parquet(path: Path, batch: int) -> tuple[Iterator[Batch], int]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise InvalidArgumentError(f"{path}: reading parquet needs pyarrow: pip install 'tqsearch[ingest]' ({e})") from None
    table = pq.ParquetFile(path)
    names = table.schema_arrow.names
    if "id" not in names or "vector" not in names:
        raise InvalidArgumentError(f"{path}: expected columns 'id' and 'vector', found {names}")
    fields = [n for n in names if n not in ("id", "vector", "document")]

    def batches() -> Iterator[Batch]:
        for record in table.iter_batches(batch_size=batch):
            cols = record.to_pydict()
            vectors = np.array(cols["vector"], dtype=np.float32)
            metas = [{f: v for f, v in zip(fields, values) if v is not None}
                     for values in zip(*(cols[f] for f in fields))] if fields else None
            yield {"ids": [str(i) for i in cols["id"]], "vectors": vectors, "metadatas": metas,
                   "documents": cols.get("document")}

    return batches(), table.metadata.num_rows


def _progress(total: int | None, enabled: bool) -> Any:
    """A tqdm bar when tqdm is installed and wanted, else None."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit=" points", desc="ingest")
