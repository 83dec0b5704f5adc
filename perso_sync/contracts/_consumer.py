"""Consumer side: replay a contract's responses to the real client, through its public API.

The client (a :class:`perso_sync.PersoClient` and, for ``llm.*`` calls, a
:class:`perso_sync.LlmProcessor`) talks to a fake platform that serves the contract's recorded
responses: REST calls through ``responses`` (which patches ``requests``), the LLM stream through an
``httpx.MockTransport``. The runner then checks that every recorded request was sent as recorded,
that nothing else was sent, and that the call returned or raised what the contract expects.

Nothing here sleeps or opens a socket. ``responses`` is a test dependency: it is imported when a
contract is run, not when this module is imported.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs

from perso_sync._endpoints import ice_servers, session_event, session_info
from perso_sync.contracts._files import decode_bytes_args
from perso_sync.contracts._match import (
    Mismatch,
    ObservedRequest,
    check_outcome,
    check_request,
    compare,
)
from perso_sync.contracts._model import Contract, Expectation, Interaction

__all__ = ["CONSUMER_API_KEY", "CONSUMER_API_SERVER", "FakePlatform", "run_consumer"]

CONSUMER_API_SERVER = "http://perso.contract.invalid"
CONSUMER_API_KEY = "contract-consumer-key"

# A session.* call needs a Session; a REST-only one (no STF capability) needs only these three
# endpoints, which the fake platform serves around the contract's own interactions (the ICE
# servers are fetched together with the session info, before the info says REST-only).
_HARNESS_INFO: dict[str, Any] = {
    "client_sdp": None,
    "server_sdp": None,
    "prompt": {"prompt_id": "prompt-harness", "name": "Harness", "system_prompt": "-"},
    "document": None,
    "llm_type": {"name": "gpt-4o-mini"},
    "model_style": {"name": "harness", "model": "harness", "model_file": None, "style": "idle"},
    "tts_type": None,
    "ice_servers": [],
    "status": "CREATED",
    "termination_reason": None,
    "duration_sec": 0,
    "created_at": "2024-05-02T09:05:55.395Z",
    "padding_left": 0.0,
    "padding_top": 0.0,
    "padding_height": 1.0,
    "background_image": None,
    "extra_data": None,
    "capability": [
        {"name": "LLM", "description": None},
        {"name": "TTS", "description": None},
        {"name": "STT", "description": None},
    ],
}


@attrs.define
class _Served:
    interaction: Interaction
    observed: ObservedRequest


class FakePlatform:
    """Serves a contract's responses in order (any order when the contract is ``unordered``),
    remembering what was asked. Thread-safe: get_all_settings asks concurrently."""

    def __init__(self, contract: Contract, harness_session: str | None = None) -> None:
        self._contract = contract
        self._pending: list[Interaction] = list(contract.interactions)
        self._lock = threading.Lock()
        self.served: list[_Served] = []
        self.mismatches: list[Mismatch] = []
        self._harness_paths: dict[tuple[str, str], bytes] = {}
        if harness_session is not None:
            info = dict(_HARNESS_INFO, session_id=harness_session)
            self._harness_paths = {
                ("GET", session_info(harness_session)): json.dumps(info).encode(),
                ("GET", ice_servers(harness_session)): b'{"ice_servers": []}',
                ("POST", session_event(harness_session)): b"{}",
            }

    def serve(self, observed: ObservedRequest) -> tuple[int, dict[str, str], bytes]:
        harness = self._harness_paths.get((observed.method.upper(), observed.path))
        if harness is not None:
            return 200, {"Content-Type": "application/json"}, harness
        with self._lock:
            index = self._find(observed)
            if index is None:
                self.mismatches.append(
                    Mismatch(
                        "request",
                        f"unexpected request {observed.method} {observed.path}"
                        f" (still expected: {[i.request.path for i in self._pending]})",
                    )
                )
                body = (
                    b'{"type":"client_error","errors":[{"code":"contract","detail":"unexpected"}]}'
                )
                return 418, {"Content-Type": "application/json"}, body
            if index != 0 and not self._contract.unordered:
                self.mismatches.append(
                    Mismatch("request", f"{observed.method} {observed.path} came out of order")
                )
            interaction = self._pending.pop(index)
            self.served.append(_Served(interaction, observed))
        response = interaction.response
        headers = {"Content-Type": response.content_type()}
        headers.update({k: v for k, v in response.headers.items() if k.lower() != "content-type"})
        return response.status, headers, response.body_bytes()

    def _find(self, observed: ObservedRequest) -> int | None:
        for index, interaction in enumerate(self._pending):
            spec = interaction.request
            if spec.method != observed.method.upper():
                continue
            if not compare(
                spec.path, observed.path, interaction.matchers, root=("request", "path")
            ):
                return index
        return None

    def finish(self) -> list[Mismatch]:
        """Every difference: requests that did not match, interactions never asked for."""
        out = list(self.mismatches)
        for served in self.served:
            out += check_request(served.interaction, served.observed)
        for interaction in self._pending:
            spec = interaction.request
            out.append(Mismatch("request", f"{spec.method} {spec.path} was never sent"))
        return out


def _observed_from_requests(prepared: Any) -> ObservedRequest:
    parts = urlsplit(prepared.url)
    body = prepared.body
    if body is None:
        raw = b""
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = bytes(body)
    return ObservedRequest(
        method=str(prepared.method),
        path=parts.path,
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=dict(prepared.headers),
        body=raw,
    )


@contextmanager
def _patched_requests(platform: FakePlatform, api_server: str) -> Iterator[None]:
    import re

    import responses

    def callback(prepared: Any) -> tuple[int, dict[str, str], bytes]:
        return platform.serve(_observed_from_requests(prepared))

    pattern = re.compile(re.escape(api_server) + r"(/.*)?")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            mock.add_callback(method, pattern, callback=callback)
        yield


def _httpx_transport(platform: FakePlatform) -> Any:
    import httpx

    # A sync handler: the MockTransport then serves both the process_llm iterator (sync side)
    # and process_chat (async side).
    def handler(request: httpx.Request) -> httpx.Response:
        observed = ObservedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.url.params),
            headers=dict(request.headers),
            body=request.read(),
        )
        status, headers, body = platform.serve(observed)
        return httpx.Response(status, headers=headers, content=body)

    return httpx.MockTransport(handler)


def run_consumer(
    contract: Contract,
    *,
    api_server: str = CONSUMER_API_SERVER,
    api_key: str = CONSUMER_API_KEY,
) -> list[Mismatch]:
    """Make the contract's public call against its recorded responses; return every mismatch
    (an empty list means the client honours the contract)."""
    expect = contract.expect
    harness = expect.target.get("session_id") if expect.call.startswith("session.") else None
    platform = FakePlatform(contract, harness_session=harness)
    result: Any = None
    error: BaseException | None = None
    with _patched_requests(platform, api_server):
        try:
            result = _invoke(expect, platform, api_server, api_key)
        except Exception as exc:  # noqa: BLE001 - any failure is an outcome the contract judges
            error = exc
    out = platform.finish()
    out += check_outcome(expect, result, error)
    return out


def _invoke(expect: Expectation, platform: FakePlatform, api_server: str, api_key: str) -> Any:
    from perso_sync.client import PersoClient

    args = decode_bytes_args(expect.args)
    kind, _, method = expect.call.partition(".")
    if kind == "llm":
        return _invoke_llm(expect, platform, api_server, args)
    client = PersoClient(api_key=api_key, api_server=api_server, max_retries=0)
    try:
        if kind == "client":
            return _CLIENT_CALLS.get(method, _plain_call)(client, method, args)
        session = client.create_session(expect.target["session_id"], width=640, height=360)
        try:
            if method == "converse":
                return _converse(session, platform, args)
            value = getattr(session, method)(**args)
        finally:
            session.stop_session()
        return value
    finally:
        client.close()


def _plain_call(client: Any, method: str, args: Mapping[str, Any]) -> Any:
    return getattr(client, method)(**args)


def _create_session_id(client: Any, method: str, args: Mapping[str, Any]) -> Any:
    if "params" in args:
        from perso_sync.models import SessionParams

        return client.create_session_id(params=SessionParams(**args["params"]))
    return client.create_session_id(**args)


def _create_session(client: Any, method: str, args: Mapping[str, Any]) -> Any:
    # Import the WebRTC stack before the clock of connect_timeout starts: on a busy machine the
    # first import alone can take longer than a short timeout, and the contract is about the
    # handshake, not about import time.
    import importlib

    importlib.import_module("perso_sync._webrtc")
    importlib.import_module("aiortc")
    # A WebRTC session that opened is closed again at once: the contract is about opening.
    session = client.create_session(**args)
    session.stop_session()
    return None


_CLIENT_CALLS: dict[str, Callable[[Any, str, Mapping[str, Any]], Any]] = {
    "create_session_id": _create_session_id,
    "create_session": _create_session,
}


def _converse(session: Any, platform: FakePlatform, args: Mapping[str, Any]) -> dict[str, Any]:
    """``session.converse``: the turns in order on one REST-only session; the result is each
    turn's reply, the LLM history (``get_message_history``) and the chat log (newest first)."""
    from perso_sync.contracts._match import to_plain

    # The session's own processor, pointed at the fake platform (the harness's only seam).
    session._processor._transport = _httpx_transport(platform)
    replies: list[Any] = []
    for turn in args.get("turns", []):
        if turn["call"] == "process_chat":
            replies.append(session.process_chat(turn["message"]))
        else:
            replies.append(_drain(session.process_llm(turn["message"])))
    return {
        "replies": replies,
        "message_history": to_plain(session.get_message_history()),
        "chat_log": [{"is_user": c.is_user, "text": c.text} for c in session.get_chat_log()],
    }


def _drain(stream: Any) -> str | None:
    """The text of a ``process_llm`` stream's ``finish=True`` chunk; an error chunk raises."""
    final: str | None = None
    with stream:
        for chunk in stream:
            if chunk.type == "error":
                raise chunk.error
            if chunk.type == "message" and chunk.finish:
                final = chunk.message
    return final


def _contract_tools(specs: Sequence[Mapping[str, Any]]) -> list[Any]:
    """``llm.process_llm`` ``tools``: client tools that each return their recorded result."""
    from perso_sync.llm import ChatTool

    def answer(result: Any) -> Callable[[dict[str, Any]], Any]:
        return lambda arguments: copy.deepcopy(result)

    return [
        ChatTool(
            name=spec["name"],
            description=spec["description"],
            parameters=spec["parameters"],
            call=answer(spec["result"]),
            execute_only=bool(spec.get("execute_only", False)),
        )
        for spec in specs
    ]


def _invoke_llm(
    expect: Expectation, platform: FakePlatform, api_server: str, args: Mapping[str, Any]
) -> Any:
    from perso_sync.llm import LlmProcessor

    processor = LlmProcessor(
        api_server=api_server,
        session_id=expect.target["session_id"],
        client_tools=_contract_tools(args.get("tools", [])),
        http_transport=_httpx_transport(platform),
    )
    try:
        for message in args.get("earlier", []):
            _drain(processor.process_llm(message))
        return llm_turn_view(processor, args)
    finally:
        close = getattr(processor, "close", None)
        if callable(close):
            close()


def llm_turn_view(processor: Any, args: Mapping[str, Any]) -> dict[str, Any]:
    """Run one ``process_llm`` turn and summarise it (what an LLM contract's ``result`` is
    compared with): ``final_message`` (the ``finish=True`` message, or None), ``tool_calls`` and
    ``tool_results`` (in order) and ``history`` (the processor's history afterwards). An ``error``
    chunk raises its ``LLMError``, so ``raises`` expectations work as for any call."""
    from perso_sync.contracts._match import to_plain

    final: str | None = None
    tool_calls: list[Any] = []
    tool_results: list[Any] = []
    with processor.process_llm(args["message"]) as stream:
        for chunk in stream:
            kind = getattr(chunk, "type", None)
            if kind == "error":
                raise chunk.error
            if kind == "message" and chunk.finish:
                final = chunk.message
            elif kind == "tool_call":
                tool_calls.extend(to_plain(chunk.tool_calls))
            elif kind == "tool_result":
                tool_results.append(to_plain(chunk.result))
    return {
        "final_message": final,
        "tool_calls": tool_calls,
        "tool_results": tool_results,
        "history": to_plain(processor.get_history()),
    }
