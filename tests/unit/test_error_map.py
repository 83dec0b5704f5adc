"""Status + body → ApiError (docs/PROTOCOL.md §2), including bodies that are not the documented
shape."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from perso_sync._error_map import api_error_from_response
from perso_sync.errors import ApiError


def _body(*errors: object, kind: str = "client_error") -> bytes:
    return json.dumps({"type": kind, "errors": list(errors)}).encode()


def test_does_not_exist_with_attr() -> None:
    body = _body(
        {
            "code": "does_not_exist",
            "detail": "Object with prompt_id=xyz does not exist.",
            "attr": "prompt",
        },
        {"code": "ignored", "detail": "only the first entry counts"},
    )
    err = api_error_from_response(404, body, "application/json")
    assert (err.error_code, err.code, err.detail, err.attr) == (
        404,
        "does_not_exist",
        "Object with prompt_id=xyz does not exist.",
        "prompt",
    )
    assert str(err) == "404:prompt_Object with prompt_id=xyz does not exist."


def test_not_in_organization() -> None:
    body = _body({"code": "not_in_organization", "detail": "LLM not assigned", "attr": "llm_type"})
    err = api_error_from_response(403, body)
    assert (err.code, err.attr) == ("not_in_organization", "llm_type")


def test_invalid_not_found_without_attr() -> None:
    body = _body({"code": "invalid", "detail": "STT feature not found", "attr": None})
    err = api_error_from_response(400, body)
    assert (err.code, err.detail, err.attr) == ("invalid", "STT feature not found", None)
    assert str(err) == "400:STT feature not found"


def test_validation_error_type() -> None:
    body = _body(
        {"code": "invalid", "detail": "Ensure this value is <= 1.0.", "attr": "padding_top"},
        kind="validation_error",
    )
    err = api_error_from_response(400, body)
    assert (err.code, err.attr) == ("invalid", "padding_top")


def test_empty_errors_list() -> None:
    err = api_error_from_response(500, _body(kind="server_error"))
    assert (err.code, err.detail, err.attr) == (
        "UNKNOWN_ERROR",
        "Server returned status 500 with no error details",
        None,
    )


def test_missing_errors_key() -> None:
    err = api_error_from_response(503, b'{"type": "server_error"}')
    assert err.detail == "Server returned status 503 with no error details"


def test_html_502_names_status_and_body_start() -> None:
    page = "<html><head><title>502 Bad Gateway</title></head>" + "x" * 1000 + "</html>"
    err = api_error_from_response(502, page.encode(), "text/html")
    assert err.error_code == 502
    assert err.code == "UNKNOWN_ERROR"
    assert "502" in err.detail
    assert "<html><head><title>502 Bad Gateway</title>" in err.detail
    assert "x" * 200 not in err.detail  # only the first 200 characters


def test_empty_504() -> None:
    err = api_error_from_response(504, b"")
    assert err.code == "UNKNOWN_ERROR"
    assert "504" in err.detail
    assert "empty" in err.detail


def test_json_that_is_not_an_object() -> None:
    err = api_error_from_response(500, b'"Internal error"')
    assert err.code == "UNKNOWN_ERROR"
    assert "Internal error" in err.detail


def test_invalid_utf8_body() -> None:
    err = api_error_from_response(502, b"\xff\xfe bad bytes")
    assert err.code == "UNKNOWN_ERROR"
    assert "502" in err.detail


def test_odd_entry_types_still_give_strings() -> None:
    err = api_error_from_response(400, _body({"code": 17, "detail": ["a", "b"], "attr": ""}))
    assert err.code == "17"
    assert err.detail == '["a", "b"]'
    assert err.attr is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
_error_entry = st.fixed_dictionaries(
    {},
    optional={"code": _json, "detail": _json, "attr": _json, "other": _json},
)


@given(status=st.integers(100, 599), body=st.binary(max_size=300))
def test_any_bytes_give_an_api_error(status: int, body: bytes) -> None:
    err = api_error_from_response(status, body)
    assert isinstance(err, ApiError)
    assert err.error_code == status
    assert isinstance(err.code, str)
    assert err.code
    assert isinstance(err.detail, str)
    assert err.attr is None or isinstance(err.attr, str)


@settings(max_examples=60)
@given(
    status=st.integers(400, 599),
    payload=st.fixed_dictionaries(
        {}, optional={"type": _json, "errors": st.lists(_error_entry, max_size=3) | _json}
    ),
)
def test_any_json_object_gives_an_api_error(status: int, payload: dict[str, object]) -> None:
    err = api_error_from_response(status, json.dumps(payload).encode(), "application/json")
    assert isinstance(err, ApiError)
    assert isinstance(err.code, str)
    assert isinstance(err.detail, str)
    str(err)
    errors = payload.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else None
    if isinstance(first, dict) and isinstance(first.get("code"), str):
        assert err.code == (first["code"] or "UNKNOWN_ERROR")
    elif not isinstance(first, dict) or first.get("code") is None:
        assert err.code == "UNKNOWN_ERROR"
