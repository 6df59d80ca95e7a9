"""Strict reading of API objects: size, depth and field types, each refused by name."""

from __future__ import annotations

import json

import pytest

from services.common.api import decode
from services.common.api.decode import ObjectError


def test_a_sound_object_is_parsed() -> None:
    obj = {"metadata": {"name": "a", "labels": {"x": "[{"}}, "spec": {"l": [[1], [2]]}}
    assert decode.parse(json.dumps(obj).encode(), "body") == obj


LIMIT = decode.MAX_OBJECT_BYTES


@pytest.mark.parametrize(("raw", "limit", "error"), [
    (b"[" * 100_000 + b"]" * 100_000, LIMIT, "body: nested deeper than 64 levels"),
    (b'{"a": ' + b"{" * 200, LIMIT, "body: nested deeper than 64 levels"),  # cut short
    (b"{]", LIMIT, "body: not valid JSON"),
    (b'"text"', LIMIT, "body: expected a JSON object, got a string"),
    (b"null", LIMIT, "body: expected a JSON object, got null"),
    (b"{" + b" " * 2000 + b"}", 1000, "body: 2002 bytes, more than the 1000 accepted"),
])
def test_hostile_bodies_are_refused_by_name(raw: bytes, limit: int, error: str) -> None:
    with pytest.raises(ObjectError) as info:
        decode.parse(raw, "body", limit)
    assert str(info.value).startswith(error), str(info.value)


def test_brackets_inside_strings_do_not_count() -> None:
    deep_text = json.dumps({"s": "[" * 1000 + '\\"{' * 500}).encode()
    assert decode.nesting(deep_text) == 1
    assert decode.parse(deep_text, "body")["s"].startswith("[[")
    assert decode.nesting(b"[" * 64 + b"]" * 64) == 64


def test_fields_are_checked_with_their_path() -> None:
    claim = {"metadata": {"name": "n", "uid": 7}, "status": "nope"}
    with pytest.raises(ObjectError, match=r"^metadata\.uid: expected a string, got a number$"):
        decode.metadata(claim, "name", "uid")
    with pytest.raises(ObjectError, match=r'^status: expected an object, got a string "nope"$'):
        decode.field(claim, "status", dict, "")
    with pytest.raises(ObjectError, match=r"^metadata: expected an object, got a number$"):
        decode.metadata({"metadata": 5}, "name")
    with pytest.raises(ObjectError, match=r"^metadata: required$"):
        decode.metadata({}, "name")
    with pytest.raises(ObjectError, match=r"^a\.b\[3\]: expected an integer, got a boolean$"):
        decode.expect(True, int, "a.b[3]")
    assert decode.metadata({"metadata": {"name": "n"}}, "name", "uid") == {"name": "n", "uid": ""}
    assert decode.field({"x": None}, "x", list, "") is None


def test_a_long_string_in_an_error_is_cut() -> None:
    with pytest.raises(ObjectError) as info:
        decode.expect("x" * 1_000_000, dict, "spec")
    assert len(str(info.value)) < 200 and "(+999960 more)" in str(info.value)


# ---- through the real client, from the test API server -----------------------------------------


SLICES = "/apis/resource.k8s.io/v1/resourceslices"


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "body", "call", "error"), [
    (SLICES, b'{"items": [5]}', "slices", "items[0]: expected an object, got a number"),
    (SLICES, b'{"items": {"a": 1}}', "slices", "items: expected a list, got an object"),
    (SLICES, b'{"items": [{"metadata": {"name": 7}}]}', "slices",
     "items[0].metadata.name: expected a string, got a number"),
    ("/api/v1/nodes/n1", b'{"metadata": "x"}', "node", 'metadata: expected an object, got a '
                                                       'string "x"'),
    ("/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c", b"[" * 100_000, "claim",
     "nested deeper than 64 levels"),
    ("/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c",
     b'{"spec": "' + b"x" * decode.MAX_OBJECT_BYTES + b'"}', "claim",
     f"is over {decode.MAX_OBJECT_BYTES} bytes"),
])
async def test_the_client_refuses_malformed_answers(kube_api, api, path: str, body: bytes,
                                                    call: str, error: str) -> None:
    from services.common.api.port import ApiError

    kube_api.serve_raw(path, body)
    calls = {"slices": lambda: api.list_slices("knd.dev", "n1"),
             "node": lambda: api.get_node("n1"), "claim": lambda: api.get_claim("ns", "c")}
    with pytest.raises(ApiError) as info:
        await calls[call]()
    assert error in str(info.value) and len(str(info.value)) < 500, str(info.value)
