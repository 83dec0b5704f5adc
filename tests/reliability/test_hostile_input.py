"""Whatever a server sends, perso_sync answers with a value or one of its own errors.

Hypothesis drives random bodies into every model (through the converter and through every
public ``PersoClient`` call, over a canned ``requests`` adapter instead of the network), random
bytes into the SSE parser and random statuses/bodies into the error mapping. A raw
``KeyError``/``TypeError``/cattrs/json exception escaping is a failure.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import requests
import requests.adapters
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perso_sync
from perso_sync import models
from perso_sync._converter import structure
from perso_sync._error_map import api_error_from_response
from perso_sync._sse import RemoteToolResult, SseParser, StreamFailed, TextDelta, ToolCalls, Unknown

pytestmark = pytest.mark.timeout(60)

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``(result, None)``, or ``(None, error)`` for one of our errors; anything else escapes."""
    try:
        return call(), None
    except perso_sync.PersoError as error:
        return None, error


WIRE_MODELS: list[type[Any]] = sorted(
    (
        cls
        for cls in vars(models).values()
        if isinstance(cls, type)
        and issubclass(cls, models._WireModel)
        and cls is not models._WireModel
    ),
    key=lambda cls: cls.__name__,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "2024-01-01T00:00:00Z", "not a date", "webrtc", "STF_WEBRTC"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _field_names(cls: type[Any]) -> list[str]:
    return [f.name for f in attrs.fields(cls) if f.init and f.name != "extra"]


@st.composite
def model_shaped(draw: st.DrawFn, cls: type[Any]) -> dict[str, Any]:
    """A dict with some of ``cls``'s field names (the realistic near-miss), random values, and
    maybe keys the model does not know."""
    names = _field_names(cls)
    chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    body = {name: draw(json_values) for name in chosen}
    body.update(draw(st.dictionaries(st.text(max_size=8), json_scalars, max_size=2)))
    return body


def bodies_for(cls: type[Any]) -> st.SearchStrategy[Any]:
    shaped = model_shaped(cls)
    return json_values | shaped | st.lists(shaped, max_size=3)


@FUZZ
@given(data=st.data(), cls=st.sampled_from(WIRE_MODELS))
def test_every_model_structures_or_raises_invalid_response(data: st.DataObject, cls: type) -> None:
    body = data.draw(bodies_for(cls))
    for target in (cls, list[cls]):
        result, error = _outcome(lambda target=target: structure(body, target))
        if error is None:
            assert isinstance(result, list if target is not cls else cls)
        else:
            assert isinstance(error, perso_sync.InvalidResponseError)
            assert str(error)


# -- the public client over a canned transport ---------------------------------------------------


class CannedAdapter(requests.adapters.BaseAdapter):
    """Answers every request with the current status and body, as a server would."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.status = 200
        self.body = b""
        self.content_type = "application/json"

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        with self.lock:
            response.status_code = self.status
            response._content = self.body
            response.headers["Content-Type"] = self.content_type
        response.request = request
        response.url = request.url or ""
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


def _params() -> perso_sync.SessionParams:
    return perso_sync.SessionParams(using_stf_webrtc=True, model_style="m", prompt="p")


CLIENT_CALLS: dict[str, Callable[[perso_sync.PersoClient], object]] = {
    "get_llms": lambda c: c.get_llms(),
    "get_ttss": lambda c: c.get_ttss(),
    "get_stts": lambda c: c.get_stts(),
    "get_model_styles": lambda c: c.get_model_styles(),
    "get_prompts": lambda c: c.get_prompts(),
    "get_documents": lambda c: c.get_documents(),
    "get_background_images": lambda c: c.get_background_images(),
    "get_mcp_servers": lambda c: c.get_mcp_servers(),
    "get_text_normalizations": lambda c: c.get_text_normalizations(),
    "get_text_normalization": lambda c: c.get_text_normalization("cfg"),
    "get_all_settings": lambda c: c.get_all_settings(),
    "get_intro_message": lambda c: c.get_intro_message("p"),
    "get_session_templates": lambda c: c.get_session_templates(),
    "get_session_template": lambda c: c.get_session_template("t"),
    "create_session_id(params)": lambda c: c.create_session_id(params=_params()),
    "create_session_id(template)": lambda c: c.create_session_id(session_template_id="t"),
    "get_session_info": lambda c: c.get_session_info("s"),
    "get_ice_servers": lambda c: c.get_ice_servers("s"),
    "exchange_sdp": lambda c: c.exchange_sdp("s", {"type": "offer", "sdp": "v=0"}),
    "create_session_event": lambda c: c.create_session_event("s", "SESSION_LOG", "x"),
    "make_tts": lambda c: c.make_tts("s", "Hello."),
    "transcribe": lambda c: c.transcribe("s", b"RIFF\x00\x00\x00\x00WAVE"),
}

statuses = st.sampled_from([200, 201, 204, 200, 200, 400, 401, 404, 429, 500, 502]) | st.integers(
    100, 599
)
raw_bodies = (
    json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
    | st.sampled_from([b"", b"<html>502</html>", b"{", b"null", b"[]", b'{"errors": 3}'])
)


@pytest.fixture(scope="module")
def canned() -> Any:
    adapter = CannedAdapter()
    session = requests.Session()
    session.mount("http://", adapter)
    client = perso_sync.PersoClient(
        api_key="k", api_server="http://fuzz.invalid", session=session, max_retries=0
    )
    yield client, adapter
    client.close()
    session.close()


@FUZZ
@given(
    data=st.data(),
    call=st.sampled_from(sorted(CLIENT_CALLS)),
    status=statuses,
)
def test_every_client_call_returns_or_raises_perso_error(
    canned: Any, data: st.DataObject, call: str, status: int
) -> None:
    client, adapter = canned
    shape = st.sampled_from(WIRE_MODELS).flatmap(bodies_for).map(lambda v: json.dumps(v).encode())
    body = data.draw(raw_bodies | shape)
    with adapter.lock:
        adapter.status, adapter.body = status, body
    _, error = _outcome(lambda: CLIENT_CALLS[call](client))
    if error is not None:
        assert repr(error)
        assert str(error)
    if not 200 <= status < 300:
        assert isinstance(error, perso_sync.ApiError)
        assert error.error_code == status


# -- the SSE parser -----------------------------------------------------------------------------

EVENT_TYPES = (TextDelta, ToolCalls, RemoteToolResult, StreamFailed, Unknown)
sse_lines = st.lists(
    st.one_of(
        json_values.map(lambda v: b"data: " + json.dumps(v).encode()),
        st.binary(max_size=30),
        st.sampled_from([b"", b":comment", b"event: x", b"data:", b"data: {", b"\r", b"id: 1"]),
    ),
    max_size=8,
).map(lambda lines: b"\n".join(lines))


@FUZZ
@given(stream=st.binary(max_size=200) | sse_lines, cuts=st.lists(st.integers(0, 200), max_size=6))
def test_sse_parser_turns_any_bytes_into_events(stream: bytes, cuts: list[int]) -> None:
    parser = SseParser()
    events = []
    start = 0
    for cut in sorted(c for c in cuts if c <= len(stream)):
        events += parser.feed(stream[start:cut])
        start = cut
    events += parser.feed(stream[start:])
    events += parser.close()
    assert all(isinstance(event, EVENT_TYPES) for event in events)
    failures = [i for i, event in enumerate(events) if isinstance(event, StreamFailed)]
    assert failures in ([], [len(events) - 1])  # a failure is the last event, and only once


# -- the error mapping --------------------------------------------------------------------------

error_bodies = raw_bodies | st.builds(
    lambda errors, kind: json.dumps({"type": kind, "errors": errors}).encode(),
    st.lists(st.dictionaries(st.sampled_from(["code", "detail", "attr", "x"]), json_values)),
    json_scalars,
)


@FUZZ
@given(
    status=st.integers(-1000, 100_000),
    body=error_bodies,
    content_type=st.none() | st.text(max_size=30),
)
def test_error_mapping_always_gives_an_api_error(
    status: int, body: bytes, content_type: str | None
) -> None:
    error = api_error_from_response(status, body, content_type)
    assert isinstance(error, perso_sync.ApiError)
    assert error.error_code == status
    assert isinstance(error.code, str)
    assert error.code
    assert isinstance(error.detail, str)
    assert str(error).startswith(f"{status}:")
    assert repr(error)
