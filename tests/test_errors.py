"""Typed errors: each is still the builtin it replaced, the collection raises them for its caller's mistakes,
and the server answers each with its own status while any other exception is a logged, opaque 500."""

import logging

import numpy as np
import pytest

import tqsearch
from tqsearch import Collection, errors
from tqsearch.collection import open_collection
from tqsearch.errors import (ClosedError, ConflictError, FileFormatError, InvalidArgumentError, InvalidTypeError,
                             NotFoundError, TQSearchError)

TREE = [(InvalidArgumentError, ValueError, 400), (InvalidTypeError, TypeError, 400), (NotFoundError, KeyError, 404),
        (ConflictError, RuntimeError, 409), (ClosedError, ValueError, 409), (FileFormatError, ValueError, 500)]


# ---------------------------------------------------------------------- the classes

@pytest.mark.parametrize("error, builtin, status", TREE, ids=[e[0].__name__ for e in TREE])
def test_each_error_is_its_builtin_and_knows_its_status(error, builtin, status):
    assert issubclass(error, TQSearchError) and issubclass(error, builtin)
    assert error.http_status == status
    with pytest.raises(builtin, match="^a message$"):
        raise error("a message")


def test_not_found_reads_cleanly_unlike_a_key_error():
    assert str(KeyError("unknown id 'x'")) == "\"unknown id 'x'\""
    assert str(NotFoundError("unknown id 'x'")) == "unknown id 'x'"


def test_the_tree_in_the_docstring_lists_every_error():
    assert errors.__all__ == sorted(errors.__all__)
    for name in errors.__all__:
        assert f"── {name} " in errors.__doc__, name
    assert tqsearch.FileFormatError is FileFormatError


# ---------------------------------------------------------------------- raised by the collection

def test_collection_raises_typed_errors_for_the_callers_mistakes(tmp_path):
    with open_collection(tmp_path / "c", dim=4, index="flat") as c:
        c.upsert(["a"], np.eye(4)[:1], [{"k": 1}])
        bad_calls = [
            (NotFoundError, "'nope'", lambda: c.get(["nope"])),
            (NotFoundError, "'nope'", lambda: c.delete(["nope"])),
            (InvalidArgumentError, "duplicates", lambda: c.upsert(["x", "x"], np.ones((2, 4)))),
            (InvalidArgumentError, "4 columns", lambda: c.upsert(["x"], np.ones((1, 5)))),  # from _validate
            (InvalidArgumentError, "NaN", lambda: c.query(np.full((1, 4), np.nan), 1)),
            (InvalidArgumentError, "k must be", lambda: c.query(np.ones((1, 4)), 0)),
            (InvalidArgumentError, "include", lambda: c.get(include=["embeddings"])),
            (InvalidArgumentError, r"\$regex", lambda: c.get(where={"$regex": "a"})),
            (InvalidTypeError, "list", lambda: c.get(where={"k": {"$in": 3}})),
            (InvalidTypeError, "float", lambda: c.upsert(["x"], np.ones((1, 4), dtype=np.int64))),
            (InvalidTypeError, "limit", lambda: c.get(limit=2.5)),
            (ConflictError, "already open", lambda: open_collection(tmp_path / "c")),
            (InvalidArgumentError, "dim=5", lambda: open_collection(tmp_path / "c", dim=5)),
        ]
        for error, match, call in bad_calls:
            with pytest.raises(error, match=match):
                call()
    with pytest.raises(ClosedError, match="closed"):
        c.upsert(["b"], np.ones((1, 4)))


def test_a_validators_builtin_error_is_kept_as_the_cause(tmp_path):
    with open_collection(tmp_path / "c", dim=4, index="flat") as c:
        with pytest.raises(InvalidArgumentError) as caught:
            c.query(np.ones((1, 3)), 1)
    assert type(caught.value.__cause__) is ValueError and str(caught.value.__cause__) == str(caught.value)


@pytest.mark.parametrize("settings, error, match", [({"M": -1}, InvalidArgumentError, "M"),
                                                    ({"bits": 12}, InvalidArgumentError, "bits"),
                                                    ({"no_such_option": 1}, InvalidTypeError, "no_such_option"),
                                                    ({}, InvalidArgumentError, "pass dim")])
def test_bad_settings_at_creation_are_typed(tmp_path, settings, error, match):
    dim = {"dim": 4} if settings else {}
    with pytest.raises(error, match=match):
        open_collection(tmp_path / "c", **dim, **settings)
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------- mapped by the server

@pytest.fixture
def client(tmp_path):
    """An in-process app over an empty root (its lifespan runs), holding collection "c": 4-d, flat, 2 points."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tqsearch.server import create_app

    with TestClient(create_app(tmp_path), raise_server_exceptions=False) as client:
        assert client.post("/collections", json={"name": "c", "dim": 4, "index": "flat"}).status_code == 201
        points = {"ids": ["a", "b"], "vectors": np.eye(4)[:2].tolist(), "metadatas": [{"k": 1}, {"k": 2}]}
        assert client.put("/collections/c/points", json=points).status_code == 200
        yield client


TYPED = [
    ("get", "/collections/nope", None, 404, "no collection named 'nope'"),
    ("post", "/collections/nope/query", {"vectors": [[1, 0, 0, 0]]}, 404, "no collection named 'nope'"),
    ("post", "/collections/c/points/get", {"ids": ["a", "zz"]}, 404, "unknown id 'zz' (1 of 2 ids not in the collection)"),
    ("post", "/collections", {"name": "c", "dim": 8}, 409, "collection 'c' already exists"),
    ("put", "/collections/c/points", {"ids": ["x"], "vectors": [[1, 2, 3]]}, 400, "vectors must have 4 columns"),
    ("put", "/collections/c/points", {"ids": ["x"], "vectors": []}, 400, "vectors must have 4 columns"),
    ("put", "/collections/c/points", {"ids": ["x", "y"], "documents": ["one"]}, 400, "a document for every id"),
    ("post", "/collections/c/query", {"vectors": [[1, 0, 0, 0]], "where": {"k": {"$in": 3}}}, 400, "$in takes a list"),
    ("post", "/collections", {"name": "d", "dim": 4, "options": {"no_such_option": 1}}, 400, "no_such_option"),
]


@pytest.mark.parametrize("method, path, body, status, detail", TYPED, ids=[f"{t[3]}-{t[1]}" for t in TYPED])
def test_typed_errors_get_their_status_and_message(client, method, path, body, status, detail):
    r = client.request(method.upper(), path, json=body)
    assert r.status_code == status
    assert detail in r.json()["detail"]


def test_a_closed_collection_is_a_conflict(client):
    client.app_state["registry"].get("c").close()
    r = client.post("/collections/c/points/get", json={})
    assert r.status_code == 409 and "is closed" in r.json()["detail"]


@pytest.mark.parametrize("bug", [KeyError("secret"), ValueError("secret"), TypeError("secret"), RuntimeError("secret"),
                                 FileFormatError("/secret/path: corrupt")], ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("method, path, body", [("query", "/collections/c/query", {"vectors": [[1, 0, 0, 0]]}),
                                                ("get", "/collections/c/points/get", {"ids": ["a"]})],
                         ids=["on-the-event-loop", "on-a-worker"])
def test_an_internal_error_is_a_logged_500_that_reveals_nothing(client, monkeypatch, caplog, bug, method, path, body):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(Collection, method, broken)
    with caplog.at_level(logging.ERROR, logger="tqsearch.server"):
        r = client.post(path, json=body)
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error (logged on the server)"}
    [record] = caplog.records
    assert record.name == "tqsearch.server" and path in record.getMessage() and record.exc_info[1] is bug
    # The parametrized exception outlives the test: its traceback's frames would keep the server's collection
    # and its native index alive until exit (nanobind then reports them as leaked).
    bug.__traceback__ = None
    monkeypatch.undo()
    assert client.post(path, json=body).status_code == 200  # the server carries on
