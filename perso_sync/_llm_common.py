"""What both LLM turn engines share, no I/O: a turn's bookkeeping around ``LlmTurn``, the request,
the deadlines' errors, the error mapping and the processor's history.

Two engines drive a turn (docs/PROTOCOL.md §6): ``_llm_loop`` on the runtime loop (httpx async;
``process_chat``, the avatar's turns) and ``_llm_caller`` on the caller's thread (``requests``,
or sync httpx over a custom transport; the ``process_llm`` iterator). They differ only in how
they wait; what a step means, which request to send, which error a deadline or a transport
failure gives and what a tool round yields is decided here, once.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from perso_sync._endpoints import USER_AGENT
from perso_sync._llm_turn import Done, Failed, LlmTurn, RunTools, TurnStep
from perso_sync._validate import json_body
from perso_sync.errors import (
    ApiError,
    InvalidInputError,
    LLMError,
    PersoConnectionError,
    PersoError,
    PersoTimeoutError,
)

if TYPE_CHECKING:
    import httpx

    from perso_sync.llm import ChatTool

__all__ = [
    "CLOSE_TIMEOUT",
    "ERROR_BODY_LIMIT",
    "REQUEST_HEADERS",
    "MessageHistory",
    "TurnProgress",
    "api_error",
    "check_transport_side",
    "connect_timeout",
    "error_result",
    "map_requests_error",
    "map_transport_error",
    "request_timeout",
]

CONNECT_TIMEOUT = 10.0
ERROR_BODY_LIMIT = 64 * 1024  # bytes of a non-2xx body read for the ApiError
CLOSE_TIMEOUT = 2.0  # bound on closing a response while being cancelled
REQUEST_HEADERS: Mapping[str, str] = {
    "Content-Type": "application/json",
    "Accept": "text/event-stream",
    "User-Agent": USER_AGENT,
}


def map_transport_error(exc: Exception) -> PersoError:
    """An httpx failure (sync or async client) as our error."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return PersoTimeoutError(f"LLM request timed out: {type(exc).__name__}")
    return PersoConnectionError(f"LLM request failed: {type(exc).__name__}: {exc}")


def map_requests_error(exc: BaseException) -> PersoError:
    """A ``requests`` / urllib3 failure (the ``process_llm`` iterator's default transport) as
    our error, worded as :func:`map_transport_error` words httpx's (same kinds of failure, same
    names), so a turn fails alike whichever transport read it."""
    import http.client

    import requests
    import urllib3.exceptions as u3

    chain = _causes(exc)
    root = chain[-1]

    def has(*kinds: type[BaseException]) -> bool:
        return any(isinstance(e, kinds) for e in chain)

    # urllib3 makes NewConnectionError (refused, unreachable) a ConnectTimeoutError too.
    if not has(u3.NewConnectionError) and has(requests.ConnectTimeout, u3.ConnectTimeoutError):
        return PersoTimeoutError("LLM request timed out: ConnectTimeout")
    if has(requests.ReadTimeout, u3.ReadTimeoutError, TimeoutError):
        return PersoTimeoutError("LLM request timed out: ReadTimeout")
    if has(u3.NewConnectionError, u3.SSLError):
        kind = "ConnectError"
    elif has(u3.DecodeError):
        kind = "DecodingError"
    elif has(http.client.HTTPException):  # cut off mid-answer (IncompleteRead, RemoteDisconnected)
        kind = "RemoteProtocolError"
    else:  # the socket failed (reset, ...)
        kind = "ReadError"
    return PersoConnectionError(f"LLM request failed: {kind}: {root}")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps, outermost first: requests wraps urllib3's error (``args[0]``),
    urllib3 its reason (``reason``, ``args[1]``) or the socket error (``__cause__``)."""
    chain = [exc]
    while len(chain) < 8:
        current = chain[-1]
        inner = getattr(current, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in current.args if isinstance(a, BaseException)), None)
        if inner is None:
            inner = current.__cause__
        if inner is None or inner in chain:
            break
        chain.append(inner)
    return chain


def api_error(status: int, body: bytes, content_type: str | None) -> ApiError:
    """A non-2xx answer to the LLM request."""
    from perso_sync._error_map import api_error_from_response

    return api_error_from_response(status, body, content_type)


def check_transport_side(transport: object, sync: bool) -> None:
    """:class:`InvalidInputError` when a custom ``http_transport`` lacks the side a turn reads
    with: sync for the ``process_llm`` iterator, async for ``process_chat``."""
    method, base, turn, other = (
        ("handle_request", "httpx.BaseTransport", "the process_llm iterator", "process_chat")
        if sync
        else ("handle_async_request", "httpx.AsyncBaseTransport", "process_chat", "process_llm")
    )
    if not hasattr(transport, method):
        raise InvalidInputError(
            f"this LlmProcessor's http_transport has no {'sync' if sync else 'async'} side (a "
            f"{base}'s {method}), which {turn} reads with; pass one that has both sides (e.g. "
            f"httpx.MockTransport), or use {other}"
        )


def error_result(exc: BaseException) -> dict[str, Any]:
    """A raising tool's result in a ``process_llm`` turn."""
    return {"error": str(exc) or type(exc).__name__}


def connect_timeout(idle: float | None) -> float:
    """The bound on connecting: the idle timeout, capped."""
    return CONNECT_TIMEOUT if idle is None else min(idle, CONNECT_TIMEOUT)


def request_timeout(idle: float | None) -> httpx.Timeout:
    """httpx's per-request timeouts: connect (capped), and each read bounded by the idle one."""
    import httpx

    return httpx.Timeout(idle, connect=connect_timeout(idle))


class MessageHistory:
    """A thread-safe list of history entries (``role`` / ``type`` / ``content`` dicts).

    An :class:`LlmProcessor` keeps one for ``process_llm``; a session keeps a second one for
    ``process_chat`` / ``process_ttstf``, as the official client does.
    """

    def __init__(self) -> None:
        self._entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def snapshot(self) -> list[dict[str, Any]]:
        """A deep copy of the entries."""
        with self._lock:
            return copy.deepcopy(self._entries)

    def append(self, entry: Mapping[str, Any]) -> None:
        """Append a copy of ``entry``."""
        copied = copy.deepcopy(dict(entry))
        with self._lock:
            self._entries.append(copied)

    def extend(self, entries: Sequence[dict[str, Any]]) -> None:
        """Append ``entries`` (already copies owned by the caller)."""
        with self._lock:
            self._entries.extend(entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class TurnProgress:
    """One turn's ``LlmTurn`` and what its last decision asks next (either engine, any thread,
    one at a time): the tool round to run, the next request to send, or nothing (finished)."""

    def __init__(
        self,
        message: str,
        tools: Sequence[ChatTool],
        history: MessageHistory,
        tool_error_result: Callable[[BaseException], Any],
    ) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.tool_error_result = tool_error_result
        self.turn = LlmTurn(message, {tool.name: tool.execute_only for tool in tools})
        self._schemas = [tool.schema() for tool in tools]
        self._history = history
        self._prior = history.snapshot()
        self.pending: RunTools | None = None  # the tool round to run next
        self.finished = False

    def request_content(self) -> bytes:
        """The body of the next request (counts a round)."""
        # Compact, as JavaScript's JSON.stringify writes the official client's bodies (a lone
        # surrogate, which UTF-8 cannot encode, becomes its \uXXXX escape, as there).
        return json_body(self.turn.request_body(self._prior, self._schemas))

    def book(self, step: TurnStep) -> bool:
        """Take in the step's decision (history committed on success only); True when the turn
        is over."""
        decision = step.decision
        if isinstance(decision, RunTools):
            self.pending = decision
        elif isinstance(decision, Done):
            self.finished = True
            self._history.extend(decision.history)
        elif isinstance(decision, Failed):
            self.finished = True
        return self.finished

    def abort(self) -> TurnStep:
        """Cancelled: the turn's last chunks (the text so far, if any)."""
        self.finished = True
        return self.turn.on_abort()

    def fail(self, error: PersoError) -> TurnStep:
        """The turn failed with ``error`` (wrapped in an ``LLMError``): its error chunk."""
        step = self.turn.on_error(LLMError(error))
        self.book(step)
        return step

    def idle_expired(self, idle: float | None) -> TurnStep:
        return self.fail(PersoTimeoutError(f"no LLM stream event within {idle}s (idle timeout)"))

    def turn_expired(self, turn_timeout: float | None) -> TurnStep:
        return self.fail(PersoTimeoutError(f"the LLM turn took longer than {turn_timeout}s"))
