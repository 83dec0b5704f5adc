"""Record mode: run a fixed script of public calls against a server and write contracts.

The traffic is captured below the public API (a ``requests`` response hook on the client's
session, a recording ``httpx`` transport under the :class:`~perso_sync.LlmProcessor`), so the
recorded requests are exactly what the client sends. Each step of the script becomes one contract:
its interactions, provider states that let the mock replay it, matchers for what the server
chooses (generated ids, timestamps, base64 audio, error wording), and the call's outcome.

Secrets: sensitive headers are written as ``<redacted>``; a value equal to the key is replaced,
and so is the key inside a longer string (a server echoing it in a message) when it is at least
:data:`SUBSTRING_SCRUB_LENGTH` characters long; the written bytes are searched for the key before
the run reports success (a hit deletes everything written). A key shorter than
:data:`MIN_KEY_LENGTH` characters is refused up front: it would match ordinary text everywhere (a
one-letter key turned ``get_background_images`` into ``get_bac<redacted>ground_images``).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs

from perso_sync._endpoints import SENSITIVE_HEADERS
from perso_sync.audio import encode_wav
from perso_sync.contracts._files import dump_contract_file, parse_contract_file
from perso_sync.contracts._match import ObservedRequest, _split_multipart, exception_view, to_plain
from perso_sync.contracts._model import REDACTED, parse_sse_body

__all__ = [
    "MIN_KEY_LENGTH",
    "RECORDED_SESSION_ID",
    "SUBSTRING_SCRUB_LENGTH",
    "KeyLeakError",
    "KeyTooShortError",
    "RecordingFailedError",
    "record",
]

#: The placeholder that replaces the session id the server generated.
RECORDED_SESSION_ID = "s-recorded-1"
_SID_MATCHER = {"match": "regex", "regex": r"[A-Za-z0-9_\-]+"}
_TIMESTAMP_KEY = re.compile(r".*_at$")
_B64_MATCHER = {"match": "regex", "regex": r"[A-Za-z0-9+/]*={0,2}"}
#: The shortest key record mode accepts: a shorter one would match ordinary recorded text (paths,
#: names, base64 audio) all the time, so it could neither be scrubbed nor searched for.
MIN_KEY_LENGTH = 8
#: A secret this long is also replaced inside longer strings (a server echoing it in a message):
#: it cannot occur in ordinary text by chance. A shorter one is replaced only where a whole value
#: equals it; if it still occurs in the output, the final search refuses the recording.
SUBSTRING_SCRUB_LENGTH = 16


class KeyLeakError(RuntimeError):
    """The API key was found in the recorded output (the files are deleted)."""


class KeyTooShortError(ValueError):
    """The API key is too short to be told apart from ordinary recorded text (nothing is sent)."""


class RecordingFailedError(RuntimeError):
    """A step of the script that must succeed failed (nothing is written)."""


@attrs.define
class _Exchange:
    request: ObservedRequest
    status: int
    headers: dict[str, str]
    body: bytes


@attrs.define
class _Capture:
    exchanges: list[_Exchange] = attrs.field(factory=list)

    def take(self) -> list[_Exchange]:
        taken, self.exchanges = self.exchanges, []
        return taken


def _requests_hook(capture: _Capture) -> Callable[..., Any]:
    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        prepared = response.request
        parts = urlsplit(prepared.url)
        body = prepared.body or b""
        capture.exchanges.append(
            _Exchange(
                request=ObservedRequest(
                    method=str(prepared.method),
                    path=parts.path,
                    query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                    headers=dict(prepared.headers),
                    body=body.encode() if isinstance(body, str) else bytes(body),
                ),
                status=response.status_code,
                headers=dict(response.headers),
                body=response.content,
            )
        )
        return response

    return hook


def _recording_transport(capture: _Capture) -> Any:
    import httpx

    def recorded(
        request: httpx.Request, sent: bytes, status: int, response: httpx.Response
    ) -> httpx.Response:
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        }
        content = response.content
        capture.exchanges.append(
            _Exchange(
                request=ObservedRequest(
                    method=request.method,
                    path=request.url.path,
                    query=dict(request.url.params),
                    headers=dict(request.headers),
                    body=sent,
                ),
                status=status,
                headers=headers,
                body=content,
            )
        )
        return httpx.Response(status, headers=headers, content=content)

    class RecordingTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
        # Both sides: the process_llm iterator reads with the sync one, process_chat (on the
        # runtime loop) with the async one.
        def __init__(self) -> None:
            self._inner = httpx.HTTPTransport()
            self._async_inner = httpx.AsyncHTTPTransport()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent = request.read()
            response = self._inner.handle_request(request)
            try:
                response.read()
            finally:
                response.close()
            return recorded(request, sent, response.status_code, response)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent = await request.aread()
            response = await self._async_inner.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
            return recorded(request, sent, response.status_code, response)

        def close(self) -> None:
            self._inner.close()

        async def aclose(self) -> None:
            await self._async_inner.aclose()

    return RecordingTransport()


# ---------------------------------------------------------------------------------------------
# Turning traffic into contract JSON


def _content_type(headers: Mapping[str, str]) -> str:
    for key, value in headers.items():
        if key.lower() == "content-type":
            return value.split(";")[0].strip().lower()
    return ""


def _request_json(exchange: _Exchange) -> dict[str, Any]:
    req = exchange.request
    out: dict[str, Any] = {"method": req.method.upper(), "path": req.path}
    if req.query:
        out["query"] = dict(req.query)
    headers: dict[str, str] = {}
    for name in req.headers:
        if name.lower() in SENSITIVE_HEADERS:
            headers[name] = REDACTED
    ctype = _content_type(req.headers)
    if ctype == "application/json":
        headers["Content-Type"] = "application/json"
    if headers:
        out["headers"] = headers
    if ctype == "application/json" and req.body:
        out["json"] = json.loads(req.body)
    elif ctype == "multipart/form-data":
        full_type = next((v for k, v in req.headers.items() if k.lower() == "content-type"), "")
        parts = _split_multipart(full_type, req.body) or {}
        fields = {n: c.decode() for n, (f, _t, c) in parts.items() if f is None}
        files = {
            n: {
                "filename": f,
                **({"content_type": t} if t else {}),
                "base64": base64.b64encode(c).decode(),
            }
            for n, (f, t, c) in parts.items()
            if f is not None
        }
        multipart: dict[str, Any] = {}
        if fields:
            multipart["fields"] = fields
        if files:
            multipart["files"] = files
        out["multipart"] = multipart
    return out


def _response_json(exchange: _Exchange) -> dict[str, Any]:
    out: dict[str, Any] = {"status": exchange.status}
    ctype = _content_type(exchange.headers)
    if ctype == "text/event-stream":
        out["headers"] = {"Content-Type": "text/event-stream"}
        out["sse"] = {
            "framing": "lines",
            "events": [item.to_json() for item in parse_sse_body(exchange.body)],
        }
        return out
    try:
        parsed = json.loads(exchange.body) if exchange.body else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        parsed = None
    if exchange.body and parsed is not None and ctype.endswith("json"):
        out["headers"] = {"Content-Type": "application/json"}
        out["json"] = parsed
    else:
        if ctype:
            out["headers"] = {"Content-Type": ctype}
        out["text"] = exchange.body.decode("utf-8", errors="replace")
    return out


def _timestamp_matchers(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}"
            if isinstance(item, str) and _TIMESTAMP_KEY.fullmatch(key):
                out[sub] = {"match": "timestamp"}
            else:
                _timestamp_matchers(item, sub, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _timestamp_matchers(item, f"{path}[{index}]", out)


def _interaction(exchange: _Exchange) -> dict[str, Any]:
    request = _request_json(exchange)
    response = _response_json(exchange)
    matchers: dict[str, Any] = {}
    body = response.get("json")
    _timestamp_matchers(body, "response.json", matchers)
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list) and body["errors"]:
            # the wording of an error is not the contract; its code and attr are
            matchers["response.json.errors[0].detail"] = {"match": "type"}
        if isinstance(body.get("audio"), str):
            matchers["response.json.audio"] = _B64_MATCHER
        if "server_sdp" in body:
            matchers["response.json.server_sdp.sdp"] = {"match": "type"}
    out: dict[str, Any] = {"request": request, "response": response}
    if matchers:
        out["matchers"] = matchers
    return out


def _session_matchers(interaction: dict[str, Any]) -> None:
    """A session object the provider creates: its id is generated, the rest is its own."""
    body = interaction["response"].get("json")
    if not isinstance(body, dict) or "session_id" not in body:
        return
    matchers = interaction.setdefault("matchers", {})
    for key in body:
        if key == "session_id":
            matchers["response.json.session_id"] = _SID_MATCHER
        elif key not in ("status", "capability"):
            matchers[f"response.json.{key}"] = {"match": "present"}
    matchers.pop("response.json.created_at", None)
    for key in list(matchers):
        if key.startswith("response.json.") and key.count(".") > 2 and "errors" not in key:
            del matchers[key]  # covered by "present" on the top-level key
    if "created_at" in body:
        matchers["response.json.created_at"] = {"match": "timestamp"}


def _expectation(
    call: str,
    args: Mapping[str, Any],
    outcome: Any,
    error: BaseException | None,
    target: str | None = None,
) -> dict[str, Any]:
    expect: dict[str, Any] = {"call": call, "args": dict(args)}
    if target is not None:
        expect["target"] = {"session_id": target}
    if error is None:
        expect["result"] = to_plain(outcome)
        return expect
    expect["raises"] = _raises(exception_view(error))
    expect["matchers"] = {
        path: {"match": "type"}
        for path in _raises_paths(expect["raises"], "raises")
        if path.endswith((".detail", ".message", ".description"))
    }
    return expect


def _raises(view: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in view.items() if k not in ("underlying",)}
    out["class"] = view["class"]
    if "underlying" in view:
        out["underlying"] = _raises(view["underlying"])
    return out


def _raises_paths(spec: Mapping[str, Any], prefix: str) -> Iterator[str]:
    for key, value in spec.items():
        if key == "underlying" and isinstance(value, Mapping):
            yield from _raises_paths(value, f"{prefix}.underlying")
        elif key != "class":
            yield f"{prefix}.{key}"


def _scrub(value: Any, replacements: Mapping[str, str]) -> Any:
    """``value`` with each secret of ``replacements`` replaced where it is: a string equal to it,
    or, for a secret of at least ``SUBSTRING_SCRUB_LENGTH`` characters, a string value containing
    it. Object keys are replaced only when equal to it. Never as a substring of everything: a
    short key would turn ``get_background_images`` into ``get_bac<redacted>ground_images``."""
    if isinstance(value, str):
        for old, new in replacements.items():
            if not old or old not in value:
                continue
            if value == old:
                value = new
            elif len(old) >= SUBSTRING_SCRUB_LENGTH:
                value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_scrub(item, replacements) for item in value]
    if isinstance(value, dict):
        return {
            replacements.get(k, k) if isinstance(k, str) else k: _scrub(v, replacements)
            for k, v in value.items()
        }
    return value


def _tiny_wav() -> bytes:
    """0.1 s of silence, 16 kHz mono 16-bit: enough for an STT request."""
    return encode_wav(b"\x00\x00" * 1600, 16000)


# ---------------------------------------------------------------------------------------------
# The script


@attrs.define
class _Recorder:
    capture: _Capture
    groups: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)
    catalog: dict[str, list[Any]] = attrs.field(factory=dict)

    def step(
        self,
        group: str,
        name: str,
        call: str,
        args: Mapping[str, Any],
        run: Callable[[], Any],
        *,
        states: Sequence[tuple[str, Mapping[str, Any]]] = (),
        target: str | None = None,
        unordered: bool = False,
        adjust: Callable[[dict[str, Any]], None] | None = None,
    ) -> Any:
        self.capture.take()
        error: BaseException | None = None
        outcome: Any = None
        try:
            outcome = run()
        except Exception as exc:  # noqa: BLE001 - the outcome, good or bad, is what we record
            error = exc
        exchanges = self.capture.take()
        contract: dict[str, Any] = {"name": name}
        if states:
            contract["provider_states"] = [
                {"state": state, "params": dict(params)} for state, params in states
            ]
        if unordered:
            contract["unordered"] = True
        contract["interactions"] = [_interaction(e) for e in exchanges]
        contract["expect"] = _expectation(call, args, outcome, error, target)
        if adjust is not None:
            adjust(contract)
        self.groups.setdefault(group, []).append(contract)
        if error is not None:
            raise _StepFailed(error)
        return outcome


class _StepFailed(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


_SETTINGS: Sequence[tuple[str, str]] = (
    ("get_llms", "llm_types"),
    ("get_ttss", "tts_types"),
    ("get_stts", "stt_types"),
    ("get_model_styles", "model_styles"),
    ("get_prompts", "prompts"),
    ("get_documents", "documents"),
    ("get_background_images", "background_images"),
    ("get_mcp_servers", "mcp_servers"),
    ("get_text_normalizations", "text_normalizations"),
)


def _first(items: Sequence[Any], key: str) -> Any:
    for item in items:
        if isinstance(item, dict) and item.get(key) is not None:
            return item[key]
    return None


def _run_script(rec: _Recorder, client: Any, api_server: str, transport: Any) -> str | None:
    from perso_sync.llm import LlmProcessor

    # Account settings: each list is recorded as the provider state that replays it.
    for method, kind in _SETTINGS:
        rec.step(
            "settings",
            f"{method} lists the organization's {kind.replace('_', ' ')}",
            f"client.{method}",
            {},
            getattr(client, method),
            adjust=functools.partial(_catalog_state_from_response, kind=kind, catalog=rec.catalog),
        )
    catalog = rec.catalog
    prompt_id = _first(catalog.get("prompts", []), "prompt_id")
    if prompt_id is not None:
        rec.step(
            "settings",
            "get_intro_message returns the intro of the matching prompt",
            "client.get_intro_message",
            {"prompt_id": prompt_id},
            lambda: client.get_intro_message(prompt_id),
            states=[("catalog has", {"kind": "prompts", "items": catalog["prompts"]})],
        )
    templates = rec.step(
        "session_templates",
        "get_session_templates lists the templates",
        "client.get_session_templates",
        {},
        client.get_session_templates,
        adjust=lambda c: _catalog_state_from_response(c, "session_templates", catalog),
    )
    if templates:
        template_id = templates[0].sessiontemplate_id
        rec.step(
            "session_templates",
            "get_session_template returns one template",
            "client.get_session_template",
            {"session_template_id": template_id},
            lambda: client.get_session_template(template_id),
            states=[
                (
                    "catalog has",
                    {"kind": "session_templates", "items": catalog["session_templates"]},
                )
            ],
        )
    _record_error(
        rec,
        "errors",
        "get_session_template of an unknown template raises ApiError",
        "client.get_session_template",
        {"session_template_id": "tmpl-recorded-missing"},
        lambda: client.get_session_template("tmpl-recorded-missing"),
        states=[("catalog lacks", {"kind": "session_templates", "id": "tmpl-recorded-missing"})],
    )

    style = _first(catalog.get("model_styles", []), "name")
    if style is None or prompt_id is None:
        return None
    params: dict[str, Any] = {"using_stf_webrtc": False, "model_style": style, "prompt": prompt_id}
    org_states: list[tuple[str, Mapping[str, Any]]] = []
    for kind, param in (
        ("llm_types", "llm_type"),
        ("tts_types", "tts_type"),
        ("stt_types", "stt_type"),
    ):
        name = _first(catalog.get(kind, []), "name")
        if name is not None:
            params[param] = name
            org_states.append(("organization has", {"kind": kind, "names": [name]}))
    create_states = [
        ("catalog has", {"kind": kind, "items": catalog[kind]})
        for kind in ("model_styles", "prompts", "llm_types", "tts_types", "stt_types")
        if kind in catalog
    ] + org_states
    _record_error(
        rec,
        "session_create",
        "create_session_id with an unknown prompt raises DoesNotExistError",
        "client.create_session_id",
        {"params": dict(params, prompt="prompt-recorded-missing")},
        lambda: _create(client, dict(params, prompt="prompt-recorded-missing")),
        states=create_states,
    )
    session_id = rec.step(
        "session_create",
        "create_session_id (form A) creates a session id",
        "client.create_session_id",
        {"params": params},
        lambda: _create(client, params),
        states=create_states,
        adjust=_session_created,
    )
    sid_state = ("session exists", {"session_id": session_id, "params": params})
    scoped = "session_scoped"
    rec.step(
        scoped,
        "get_session_info returns the session",
        "client.get_session_info",
        {"session_id": session_id},
        lambda: client.get_session_info(session_id),
        states=[sid_state],
        adjust=_session_info_recorded,
    )
    rec.step(
        scoped,
        "get_ice_servers returns the RTCIceServer list",
        "client.get_ice_servers",
        {"session_id": session_id},
        lambda: client.get_ice_servers(session_id),
        states=[sid_state],
        adjust=_ice_servers_recorded,
    )
    rec.step(
        scoped,
        "make_tts returns base64 audio",
        "client.make_tts",
        {"session_id": session_id, "text": "Hello from the recorder."},
        lambda: client.make_tts(session_id, "Hello from the recorder."),
        states=[sid_state],
        adjust=_tts_recorded,
    )
    wav = _tiny_wav()
    rec.step(
        scoped,
        "transcribe posts the WAV as multipart and returns the transcript",
        "client.transcribe",
        {"session_id": session_id, "wav": {"$base64": base64.b64encode(wav).decode()}},
        lambda: client.transcribe(session_id, wav),
        states=[sid_state],
        adjust=lambda c: _stt_recorded(c, session_id),
    )
    processor = LlmProcessor(api_server=api_server, session_id=session_id, http_transport=transport)
    try:
        from perso_sync.contracts._consumer import llm_turn_view

        rec.step(
            "llm",
            "process_llm streams the reply",
            "llm.process_llm",
            {"message": "Hello"},
            lambda: llm_turn_view(processor, {"message": "Hello"}),
            states=[sid_state],
            target=session_id,
            adjust=lambda c: _llm_recorded(c, session_id),
        )
    finally:
        processor.close()
    rec.step(
        scoped,
        "create_session_event posts the event and its detail",
        "client.create_session_event",
        {"session_id": session_id, "event": "SESSION_END", "detail": "recorder done"},
        lambda: client.create_session_event(session_id, "SESSION_END", "recorder done"),
        states=[sid_state],
        adjust=_event_recorded,
    )
    _record_error(
        rec,
        "errors",
        "get_session_info of an unknown session raises ApiError",
        "client.get_session_info",
        {"session_id": "s-recorded-missing"},
        lambda: client.get_session_info("s-recorded-missing"),
        states=[("session does not exist", {"session_id": "s-recorded-missing"})],
    )
    return str(session_id)


def _record_error(
    rec: _Recorder,
    group: str,
    name: str,
    call: str,
    args: Mapping[str, Any],
    run: Callable[[], Any],
    *,
    states: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> None:
    # an error step is expected to fail; its outcome is recorded either way
    with contextlib.suppress(_StepFailed):
        rec.step(group, name, call, args, run, states=states)


def _create(client: Any, params: Mapping[str, Any]) -> Any:
    from perso_sync.models import SessionParams

    return client.create_session_id(params=SessionParams(**params))


def _catalog_state_from_response(
    contract: dict[str, Any], kind: str, catalog: dict[str, list[Any]]
) -> None:
    interactions = contract["interactions"]
    if not interactions or "json" not in interactions[-1]["response"]:
        return
    items = interactions[-1]["response"]["json"]
    if isinstance(items, list):
        catalog[kind] = items
        contract["provider_states"] = [
            {"state": "catalog has", "params": {"kind": kind, "items": items}}
        ]


def _session_created(contract: dict[str, Any]) -> None:
    for interaction in contract["interactions"]:
        _session_matchers(interaction)


def _session_info_recorded(contract: dict[str, Any]) -> None:
    for interaction in contract["interactions"]:
        _session_matchers(interaction)
    result = contract["expect"]["result"]
    if isinstance(result, dict):
        # the model's view of fields the provider decides is not what this contract checks
        contract["expect"]["result"] = {
            k: result[k] for k in ("session_id", "status", "capability") if k in result
        }


def _ice_servers_recorded(contract: dict[str, Any]) -> None:
    for interaction in contract["interactions"]:
        body = interaction["response"].get("json")
        if isinstance(body, dict) and "ice_servers" in body:
            servers = body["ice_servers"]
            session_id = contract["provider_states"][0]["params"]["session_id"]
            contract["provider_states"].append(
                {
                    "state": "session has ice servers",
                    "params": {"session_id": session_id, "ice_servers": servers},
                }
            )


def _tts_recorded(contract: dict[str, Any]) -> None:
    contract["expect"]["matchers"] = {"result.audio": _B64_MATCHER}


def _stt_recorded(contract: dict[str, Any], session_id: str) -> None:
    result = contract["expect"].get("result")
    if isinstance(result, dict) and isinstance(result.get("text"), str):
        contract["provider_states"].append(
            {
                "state": "session transcribes as",
                "params": {"session_id": session_id, "text": result["text"]},
            }
        )
    for interaction in contract["interactions"]:
        matchers = interaction.setdefault("matchers", {})
        body = interaction["response"].get("json")
        if isinstance(body, dict):
            for key in body:
                if key != "text":
                    matchers[f"response.json.{key}"] = {"match": "present"}


def _llm_recorded(contract: dict[str, Any], session_id: str) -> None:
    events = [
        item["data"]
        for interaction in contract["interactions"]
        for item in interaction["response"].get("sse", {}).get("events", [])
        if "data" in item
    ]
    contract["provider_states"].append(
        {"state": "llm replies", "params": {"session_id": session_id, "events": events}}
    )


def _event_recorded(contract: dict[str, Any]) -> None:
    for interaction in contract["interactions"]:
        if "json" in interaction["response"]:
            interaction.setdefault("matchers", {})["response.json"] = {"match": "present"}


# ---------------------------------------------------------------------------------------------
# Entry point


@contextmanager
def _recording_client(api_key: str, api_server: str, capture: _Capture) -> Iterator[Any]:
    import requests

    from perso_sync._http_watch import mount_deadline_adapters
    from perso_sync.client import PersoClient

    http = mount_deadline_adapters(requests.Session())  # the client's whole-exchange deadline
    http.hooks["response"].append(_requests_hook(capture))
    client = PersoClient(api_key=api_key, api_server=api_server, max_retries=0, session=http)
    try:
        yield client
    finally:
        client.close()
        http.close()


def record(out_dir: str | Path, *, api_key: str, api_server: str) -> list[Path]:
    """Run the script against ``api_server`` with ``api_key`` and write one contract file per
    group into ``out_dir``; return the written paths. Raises :class:`KeyLeakError` (and deletes
    what it wrote) if the key is found in the output."""
    from perso_sync._rest import SecretStr

    api_key = SecretStr(api_key)  # no frame of an error's traceback shows the raw key
    if not api_key:
        raise ValueError("an API key is needed to record (set $PERSO_INTERACTIVE_API_KEY)")
    if len(api_key) < MIN_KEY_LENGTH:
        raise KeyTooShortError(
            f"this API key is too short to scrub safely from recorded contracts (it would match "
            f"ordinary text): record mode needs a key of at least {MIN_KEY_LENGTH} characters "
            "(against the mock, start it with a longer --api-key)"
        )
    from perso_sync._endpoints import normalize_api_server

    server = normalize_api_server(api_server)
    capture = _Capture()
    rec = _Recorder(capture=capture)
    try:
        with _recording_client(api_key, server, capture) as client:
            session_id = _run_script(rec, client, server, _recording_transport(capture))
    except _StepFailed as exc:
        step = rec.groups and list(rec.groups.values())[-1][-1]["name"]
        reason = str(_scrub(f"{type(exc.error).__name__}: {exc.error}", {api_key: REDACTED}))
        raise RecordingFailedError(f"step {step!r} failed: {reason}") from None
    replacements: dict[str, str] = {api_key: REDACTED}
    if session_id:
        replacements[session_id] = RECORDED_SESSION_ID
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for group, contracts in rec.groups.items():
        scrubbed = _scrub(copy.deepcopy(contracts), replacements)
        text = dump_contract_file(
            parse_contract_file(
                {"format": "perso-contract/1", "contracts": scrubbed}, f"{group}.json"
            ).contracts,
            description=f"Recorded from {server} by python -m perso_sync.contracts record.",
        )
        path = out / f"{group}.json"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    leaked = [p for p in written if api_key.encode() in p.read_bytes()]
    if leaked:
        for path in written:
            path.unlink(missing_ok=True)
        raise KeyLeakError(
            f"the API key was found in {[p.name for p in leaked]}; nothing kept (a key that is "
            "also ordinary text, e.g. a word of the API's paths, cannot be told apart from it: "
            "record with a longer, random key)"
        )
    return written
