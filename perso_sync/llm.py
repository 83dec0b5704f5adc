"""LLM turns with client tools: ``ChatTool``, ``LlmProcessor`` and the chunks of ``process_llm``.

A turn (docs/PROTOCOL.md §6) runs on the runtime loop (``_runtime``): the request is streamed with
``httpx.AsyncClient`` (anyio-native, so abort, ``break`` and ``clear_buffer`` cancel it cleanly,
and its ``MockTransport`` is the seam the contract tests use), parsed by ``_sse.SseParser`` and
booked by ``_llm_turn.LlmTurn``. The user's thread reads the chunks through a sync iterator::

    processor = LlmProcessor(api_server=url, session_id=sid, client_tools=[weather])
    with processor.process_llm("What's the weather in Seoul?") as stream:
        for chunk in stream:
            if chunk.type == "message" and chunk.finish:
                print(chunk.message)

Threads: async tools run as tasks on the loop, sync tools on worker threads, all concurrently;
``LlmProcessorCallbacks`` are delivered in order by a ``CallbackDispatcher`` (never on the loop
thread). Session-scoped requests carry no API key.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from perso_sync import _endpoints
from perso_sync._llm_turn import (
    Done,
    ErrorChunk,
    Failed,
    LlmChunk,
    LlmTurn,
    MessageChunk,
    RunTools,
    ToolCallChunk,
    ToolResultChunk,
    ToolRun,
    TurnStep,
)
from perso_sync._runtime import (
    CallbackDispatcher,
    StreamSink,
    SyncStream,
    get_runtime,
    run_sync_off_loop,
)
from perso_sync._sse import SseParser
from perso_sync._validate import check_json_text, check_text, check_timeout, json_body
from perso_sync.errors import (
    ApiError,
    InvalidInputError,
    LLMError,
    PersoConnectionError,
    PersoError,
    PersoTimeoutError,
)
from perso_sync.models import ChatState

if TYPE_CHECKING:
    import anyio
    import httpx

__all__ = [
    "AbortSignal",
    "ChatTool",
    "ErrorChunk",
    "LlmChunk",
    "LlmProcessor",
    "LlmProcessorCallbacks",
    "LlmStream",
    "MessageChunk",
    "ToolCallChunk",
    "ToolResultChunk",
]

DEFAULT_TIMEOUT = 60.0  # seconds: connect, and the longest wait for the next event of a stream
DEFAULT_TURN_TIMEOUT = 300.0  # seconds: a whole turn (every request, stream and tool round)
_CONNECT_TIMEOUT = 10.0
_ERROR_BODY_LIMIT = 64 * 1024  # bytes of a non-2xx body read for the ApiError
_CLOSE_TIMEOUT = 2.0  # bound on closing a response while being cancelled
DEFAULT_TOOL_ERROR_RESULT: Mapping[str, Any] = {"result": "error!"}

# (runtime, client): the client every processor without a custom transport uses; only touched
# on that runtime's loop thread.
_shared_client: tuple[object, httpx.AsyncClient] | None = None


@attrs.frozen
class ChatTool:
    """A client tool the LLM may call.

    ``parameters`` is a JSON Schema of the arguments; ``call`` takes the decoded arguments dict
    and returns a JSON-able object; it may be a plain function (run on a worker thread) or an
    ``async def`` (run on the runtime loop; it must not call the blocking API). With
    ``execute_only=True`` the LLM is not asked to answer after the tool ran (unless other tools
    of the same request need it).
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    call: Callable[[dict[str, Any]], Any]
    execute_only: bool = False

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInputError("ChatTool.name must be a non-empty string")
        if not callable(self.call):
            raise InvalidInputError(f"ChatTool {self.name!r}: call must be callable")
        if not isinstance(self.parameters, Mapping):
            raise InvalidInputError(f"ChatTool {self.name!r}: parameters must be a JSON Schema")

    def schema(self) -> dict[str, Any]:
        """The entry of the request's ``tools`` list (keys in the official client's order)."""
        return {
            "type": "function",
            "function": {
                "description": self.description,
                "name": self.name,
                "parameters": dict(self.parameters),
            },
        }

    def is_async(self) -> bool:
        """True when ``call`` is a coroutine function (run on the loop, not on a thread)."""
        call = self.call
        return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
            getattr(call, "__call__", None)  # noqa: B004 -- an object with an async __call__
        )


class AbortSignal:
    """Cancels a running ``process_llm`` turn; ``abort()`` may be called from any thread.

    The stream then yields one final ``message`` chunk with the text received so far (if any)
    and ends; no further request is sent. Aborting twice is harmless.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._aborted = False
        self._listeners: list[Callable[[], None]] = []

    @property
    def aborted(self) -> bool:
        """True once ``abort()`` was called."""
        return self._aborted

    def abort(self) -> None:
        """Abort the turn(s) this signal was given to."""
        with self._lock:
            if self._aborted:
                return
            self._aborted = True
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()

    def _subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` on abort (at once if already aborted); returns an unsubscribe."""
        with self._lock:
            if not self._aborted:
                self._listeners.append(listener)
                return lambda: self._unsubscribe(listener)
        listener()
        return lambda: None

    def _unsubscribe(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def __repr__(self) -> str:
        return f"AbortSignal(aborted={self._aborted})"


@attrs.frozen
class LlmProcessorCallbacks:
    """Side-effect hooks of an :class:`LlmProcessor`, called in order on a worker thread.

    ``on_chat_state_change(add, remove)``: ``ChatState.LLM`` is added when a turn starts and
    removed when it ends. ``on_error(error)``: a turn failed (the ``LLMError``).
    ``on_chat_log(message, is_user)`` and ``on_ttstf(message)`` are used by
    :meth:`LlmProcessor.process_chat` (``process_llm``, as in the JS SDK, neither logs nor
    speaks).
    """

    on_chat_state_change: Callable[[ChatState | None, ChatState | None], object] | None = None
    on_error: Callable[[BaseException], object] | None = None
    on_chat_log: Callable[[str, bool], object] | None = None
    on_ttstf: Callable[[str], object] | None = None


class LlmStream(Iterator[LlmChunk]):
    """The chunks of one ``process_llm`` turn: a sync iterator, a context manager, ``close()``.

    Iterate it once. Leaving the ``with`` block, ``close()``, ``break`` (the stream is then
    collected) and an ``AbortSignal`` all cancel the loop-side work and close the HTTP stream.
    """

    def __init__(self, stream: SyncStream[LlmChunk]) -> None:
        self._stream = stream

    def __iter__(self) -> LlmStream:
        iter(self._stream)
        return self

    def __next__(self) -> LlmChunk:
        return next(self._stream)

    def close(self) -> None:
        """Cancel the turn if it still runs and close its HTTP stream. Idempotent."""
        self._stream.close()

    def __enter__(self) -> LlmStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _map_transport_error(exc: Exception) -> PersoError:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return PersoTimeoutError(f"LLM request timed out: {type(exc).__name__}")
    return PersoConnectionError(f"LLM request failed: {type(exc).__name__}: {exc}")


def _api_error(status: int, body: bytes, content_type: str | None) -> ApiError:
    from perso_sync._error_map import api_error_from_response

    return api_error_from_response(status, body, content_type)


def _error_result(exc: BaseException) -> dict[str, Any]:
    return {"error": str(exc) or type(exc).__name__}


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


class LlmProcessor:
    """LLM turns for one session id, with client tools and a message history.

    Works with any session id, with or without WebRTC. ``http_transport`` (an
    ``httpx.AsyncBaseTransport``) replaces the network, e.g. ``httpx.MockTransport``. Call
    ``close()`` (or use ``with``) to release the HTTP connections.

    Two deadlines bound every turn (seconds; None = no limit; anything but a positive finite
    number is an :class:`InvalidInputError`); either one ends the turn with an ``LLMError``
    wrapping a :class:`PersoTimeoutError`:

    - ``timeout`` (idle, default 60 s): connecting, and the wait for the next *event* of the
      stream. Bytes that complete no event (SSE keep-alive comments, a server dripping one byte
      at a time) do not count as progress.
    - ``turn_timeout`` (default 300 s): the whole turn, from the first request to the last
      event, every tool round and follow-up request included.
    """

    def __init__(
        self,
        *,
        api_server: str,
        session_id: str,
        client_tools: Sequence[ChatTool] = (),
        callbacks: LlmProcessorCallbacks | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        turn_timeout: float | None = DEFAULT_TURN_TIMEOUT,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise InvalidInputError("session_id must be a non-empty string")
        if not isinstance(api_server, str) or not api_server.strip():
            raise InvalidInputError("api_server must be a URL string")
        self._url = _endpoints.normalize_api_server(api_server) + _endpoints.llm_v2(session_id)
        self.session_id = session_id
        self._client_tools = _check_tools(client_tools)
        self._callbacks = callbacks or LlmProcessorCallbacks()
        self._timeout = check_timeout("timeout", timeout)
        self._turn_timeout = check_timeout("turn_timeout", turn_timeout)
        self._transport = http_transport
        self._history = MessageHistory()
        # Set by a Session: called on the runtime loop when a process_llm turn starts (LLM, None)
        # and ends (None, LLM), so the session's chat states show the LLM working.
        self._state_listener: Callable[[ChatState | None, ChatState | None], None] | None = None
        # Built here, not on first use: it starts nothing, and two threads making their first
        # turn at once must not each build one (one would never be closed).
        self._dispatcher = CallbackDispatcher(on_error=self._callback_failed)
        self._client: httpx.AsyncClient | None = None
        self._client_owner: object = None  # the runtime the client belongs to (fork-safe)

    def __repr__(self) -> str:
        return f"LlmProcessor(url={self._url!r}, tools={[t.name for t in self._client_tools]})"

    # -- history -------------------------------------------------------------------------------

    def get_history(self) -> list[dict[str, Any]]:
        """A copy of the conversation history of :meth:`process_llm` turns (entries have
        ``role``, ``content``, ...)."""
        return self._history.snapshot()

    def add_to_history(self, entry: Mapping[str, Any]) -> None:
        """Append one history entry, e.g. ``{"role": "assistant", "content": "..."}``."""
        if not isinstance(entry, Mapping):
            raise InvalidInputError("a history entry must be a mapping (a dict)")
        check_json_text("the history entry", dict(entry))  # else every later turn would fail
        self._history.append(entry)

    # -- turns ---------------------------------------------------------------------------------

    def process_llm(
        self,
        message: str,
        tools: Sequence[ChatTool] | None = None,
        abort: AbortSignal | None = None,
    ) -> LlmStream:
        """Send ``message`` and stream the answer as chunks (see :class:`LlmStream`).

        ``tools`` replaces the processor's client tools for this turn. Errors arrive as an
        :class:`ErrorChunk` (the last chunk); the turn's history is kept only on success. An
        empty message is refused (:class:`InvalidInputError`) before any request.
        """
        message = _check_message(message)
        turn_tools = self._client_tools if tools is None else _check_tools(tools)
        runtime = get_runtime()
        return LlmStream(runtime.iterate_pushed(self._push_turn, message, turn_tools, abort))

    def process_chat(self, message: str, *, timeout: float | None = None) -> str:
        """Run a turn with the callbacks as its side effects and return the final text.

        The user message and each finished answer go to ``on_chat_log``, each text delta to
        ``on_ttstf``, the LLM state to ``on_chat_state_change``; a failure goes to ``on_error``
        and is raised (``LLMError``). A raising tool gives ``{"result": "error!"}``. The turn
        uses and extends the processor's history, as :meth:`process_llm` does.
        ``timeout``: seconds this call may block (None: only the processor's own deadlines
        apply); then the turn is cancelled and :class:`PersoTimeoutError` is raised.
        """
        message = _check_message(message)
        timeout = check_timeout("timeout", timeout)

        def on_delta(text: str) -> None:
            if text:  # an emoji-only delta leaves nothing to speak
                self._notify("on_ttstf", text)

        def on_state(add: ChatState | None, remove: ChatState | None) -> None:
            self._notify("on_chat_state_change", add, remove)

        def on_log(text: str, is_user: bool) -> None:
            self._notify("on_chat_log", text, is_user)

        try:
            return get_runtime().call(
                self._run_chat_turn_kw, message, on_delta, on_state, on_log, timeout=timeout
            )
        except LLMError as exc:
            self._notify("on_error", exc)
            raise

    async def _run_chat_turn_kw(
        self,
        message: str,
        on_delta: Callable[[str], None],
        on_state: Callable[[ChatState | None, ChatState | None], None],
        on_log: Callable[[str, bool], None],
    ) -> str:
        return await self.run_chat_turn(
            message, on_delta=on_delta, on_state=on_state, on_log=on_log
        )

    async def run_chat_turn(
        self,
        message: str,
        *,
        on_delta: Callable[[str], None],
        on_state: Callable[[ChatState | None, ChatState | None], None],
        on_log: Callable[[str, bool], None],
        tool_error_result: Mapping[str, Any] = DEFAULT_TOOL_ERROR_RESULT,
        history: MessageHistory | None = None,
    ) -> str:
        """The avatar-driving turn (``Session.process_chat``), awaited ON the runtime loop.

        The hooks are loop-side and must not block: ``on_delta(text)`` for every text delta
        (emoji removed; possibly empty then), ``on_state(add, remove)`` for ``ChatState.LLM``,
        ``on_log(text, is_user)`` for the user message and each finished answer. Returns the
        assistant's last message; raises ``LLMError``; cancellable (``clear_buffer``). A raising
        tool gives ``tool_error_result``. ``history`` is the history the turn sends and extends
        (a session passes its own chat history); by default the processor's.
        """
        message = _check_message(message)
        error_result = dict(tool_error_result)
        engine = _TurnEngine(
            self,
            message,
            self._client_tools,
            lambda exc: dict(error_result),
            self._history if history is None else history,
        )
        on_log(message, True)
        on_state(ChatState.LLM, None)
        try:
            while True:
                step = await engine.next_step()
                if step is None:
                    break
                for delta in step.deltas:
                    on_delta(delta)
                for text in step.messages:
                    on_log(text, False)
                if isinstance(step.decision, Failed):
                    raise step.decision.error
                if isinstance(step.decision, Done):
                    return step.decision.text
            return ""
        finally:
            await engine.aclose()
            on_state(None, ChatState.LLM)

    async def _push_turn(
        self,
        sink: StreamSink,
        message: str,
        tools: Sequence[ChatTool],
        abort: AbortSignal | None,
    ) -> None:
        # The producer of a process_llm stream (Runtime.iterate_pushed): the whole turn runs
        # here, in one cancel scope, pushing its chunks as they come.
        engine = _TurnEngine(self, message, tools, _error_result, self._history)
        runtime = get_runtime()
        unsubscribe: Callable[[], None] | None = None

        def abort_from_any_thread() -> None:
            engine.abort_requested = True  # seen before the next step, at once
            runtime.call_soon_threadsafe(engine.cancel_step)  # cancels a step under way

        self._llm_state(ChatState.LLM, None)
        try:
            if abort is not None:
                unsubscribe = abort._subscribe(abort_from_any_thread)
            await engine.run(sink, lambda error: self._notify("on_error", error))
        finally:
            if unsubscribe is not None:
                unsubscribe()
            await engine.aclose()
            self._llm_state(None, ChatState.LLM)

    # -- plumbing ------------------------------------------------------------------------------

    def _callback_failed(self, exc: BaseException) -> None:
        import logging

        logging.getLogger("perso_sync.llm").error("an LlmProcessor callback raised", exc_info=exc)

    def _llm_state(self, add: ChatState | None, remove: ChatState | None) -> None:
        listener = self._state_listener
        if listener is not None:
            listener(add, remove)
        self._notify("on_chat_state_change", add, remove)

    def _notify(self, name: str, *args: Any) -> None:
        callback = getattr(self._callbacks, name)
        if callback is not None:
            self._dispatcher.submit(callback, *args)

    def _http_client(self) -> httpx.AsyncClient:
        """The client for this processor's requests; called on the runtime loop.

        Without a custom transport, every processor shares one client per runtime (building one
        costs tens of milliseconds for its TLS context, and the pool is shared); a fork gets a
        fresh one with its fresh runtime. Timeouts are set per request.
        """
        import httpx

        runtime = get_runtime()
        if self._transport is None:
            global _shared_client
            shared = _shared_client
            if shared is None or shared[0] is not runtime:
                shared = _shared_client = (runtime, httpx.AsyncClient())
            return shared[1]
        if self._client is None or self._client_owner is not runtime:
            self._client = httpx.AsyncClient(transport=self._transport)
            self._client_owner = runtime
        return self._client

    def _request_timeout(self) -> httpx.Timeout:
        import httpx

        idle = self._timeout
        return httpx.Timeout(
            idle, connect=_CONNECT_TIMEOUT if idle is None else min(idle, _CONNECT_TIMEOUT)
        )

    def close(self) -> None:
        """Release this processor's resources and stop delivering callbacks. Idempotent."""
        client, self._client = self._client, None
        if client is not None and self._client_owner is get_runtime():
            get_runtime().call(client.aclose, timeout=_CLOSE_TIMEOUT)
        self._dispatcher.close()

    def __enter__(self) -> LlmProcessor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _check_message(message: str) -> str:
    return check_text("message", message)


def _check_tools(tools: Sequence[ChatTool]) -> tuple[ChatTool, ...]:
    checked = tuple(tools)
    names = set()
    for tool in checked:
        if not isinstance(tool, ChatTool):
            raise InvalidInputError(f"tools must be ChatTool objects, not {type(tool).__name__}")
        if tool.name in names:
            raise InvalidInputError(f"two tools are named {tool.name!r}")
        names.add(tool.name)
    return checked


def _no_clock() -> float:
    raise AssertionError("the turn's clock is set by its first step")


class _TurnEngine:
    """Drives one LlmTurn on the loop: requests, stream reads, tool runs. ``run()`` does the
    whole turn (process_llm); ``next_step()`` one step per call (process_chat, whose caller
    acts between steps)."""

    def __init__(
        self,
        processor: LlmProcessor,
        message: str,
        tools: Sequence[ChatTool],
        error_result: Callable[[BaseException], Any],
        history: MessageHistory,
    ) -> None:
        self._processor = processor
        self._history = history
        self._tools = {tool.name: tool for tool in tools}
        self._schemas = [tool.schema() for tool in tools]
        self._error_result = error_result
        self.turn = LlmTurn(message, {tool.name: tool.execute_only for tool in tools})
        self._prior = history.snapshot()
        self._pending: RunTools | None = None
        self._response: httpx.Response | None = None
        self._reader: AsyncIterator[bytes] | None = None
        self._parser = SseParser()
        self._deadline: float | None = None  # the turn_timeout's, set by the first step
        self._scope: anyio.CancelScope | None = None  # the running step's
        self._new_scope: type[anyio.CancelScope] | None = None  # set by the first step
        self._clock: Callable[[], float] = _no_clock
        self.abort_requested = False  # set by cancel_step (run(): also from any thread)
        self._idle_from: float | None = None  # run(): when the current read began
        self._idle_expired = False
        self._watchdog: asyncio.TimerHandle | None = None
        self.finished = False

    async def next_step(self) -> TurnStep | None:
        """Do the next unit of work; None once the turn is over, or when :meth:`cancel_step`
        (an abort) cancelled it."""
        import anyio

        if self.finished:
            return None
        if self._new_scope is None:
            # The loop's clock and the scope class of the running backend, looked up once per
            # turn: anyio.current_time() and anyio.CancelScope() each find the backend again on
            # every call, a measurable share of a step when every network read is one.
            self._clock = asyncio.get_running_loop().time
            self._new_scope = type(anyio.CancelScope())
        now = self._clock()
        turn_timeout = self._processor._turn_timeout
        if turn_timeout is not None and self._deadline is None:
            self._deadline = now + turn_timeout
        turn_deadline = math.inf if self._deadline is None else self._deadline
        # Idle = no *event* for `timeout` seconds while reading: bytes that complete none
        # (keep-alive comments, a drip) are no progress, so httpx's per-read timeout alone would
        # never fire. One cancel scope per step carries both deadlines and the abort (entering
        # and leaving a scope is most of the loop's work per network read).
        idle = self._processor._timeout
        reading = self._pending is None and self._reader is not None
        idle_deadline = now + idle if reading and idle is not None else math.inf
        step: TurnStep | None = None
        with self._new_scope(deadline=min(turn_deadline, idle_deadline)) as scope:
            self._scope = scope
            if self.abort_requested:
                scope.cancel()
            step = await self._next()
        self._scope = None
        if scope.cancelled_caught and self.abort_requested:
            return None  # the caller aborts the turn
        if step is None or scope.cancelled_caught:
            await self._close_response()
            if idle_deadline < turn_deadline:
                error = PersoTimeoutError(f"no LLM stream event within {idle}s (idle timeout)")
            else:
                error = PersoTimeoutError(f"the LLM turn took longer than {turn_timeout}s")
            step = self.turn.on_error(LLMError(error))
        if self._book(step):
            await self._close_response()
        return step

    async def run(self, sink: StreamSink, on_failed: Callable[[LLMError], object]) -> None:
        """The whole turn, its chunks put into ``sink`` as each step makes them (process_llm).

        One cancel scope for the whole turn carries the turn deadline and the abort; the idle
        deadline is a watchdog timer that only looks at when the current read began, so a
        network read costs no scope and no timer of its own. The idle clock runs only while
        reading: not while the consumer lags (parked on the credits), nor during requests and
        tools (which the httpx timeouts and the turn deadline bound, as in ``next_step``).
        """
        import anyio

        loop = asyncio.get_running_loop()
        self._clock = clock = loop.time
        turn_timeout = self._processor._turn_timeout
        idle = self._processor._timeout
        self._deadline = math.inf if turn_timeout is None else clock() + turn_timeout
        step: TurnStep | None = None
        try:
            with anyio.CancelScope(deadline=self._deadline) as scope:
                self._scope = scope
                while not self.finished and not self.abort_requested:
                    if idle is not None and self._pending is None and self._reader is not None:
                        self._idle_from = clock()
                        if self._watchdog is None:
                            due = self._idle_from + idle
                            self._watchdog = loop.call_at(due, self._idle_check)
                    step = await self._next()
                    self._idle_from = None
                    finished = self._book(step)
                    full = False
                    for chunk in step.chunks:
                        full = sink.put(chunk) or full
                    if isinstance(step.decision, Failed):
                        on_failed(step.decision.error)
                    if full and not finished:
                        await sink.wait_for_room()
        finally:  # also when the stream is closed under us: no timer outlives the turn
            self._scope = None
            self._idle_from = None
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
        if self.finished:
            return
        await self._close_response()
        if self.abort_requested:
            step = self.abort()
        elif self._idle_expired:
            step = self.turn.on_error(
                LLMError(PersoTimeoutError(f"no LLM stream event within {idle}s (idle timeout)"))
            )
        else:
            step = self.turn.on_error(
                LLMError(PersoTimeoutError(f"the LLM turn took longer than {turn_timeout}s"))
            )
        self.finished = True
        for chunk in step.chunks:
            sink.put(chunk)  # the last ones: no need to wait for room
        if isinstance(step.decision, Failed):
            on_failed(step.decision.error)

    def _idle_check(self) -> None:
        # The idle watchdog (run()): cancels the turn when the current read has waited `timeout`
        # seconds for an event, else looks again when that would be.
        self._watchdog = None
        since = self._idle_from
        idle = self._processor._timeout
        if since is None or idle is None or self._scope is None:
            return  # not reading now: the next read re-arms it
        due = since + idle
        if self._clock() >= due:
            self._idle_expired = True
            self._scope.cancel()
        else:
            self._watchdog = asyncio.get_running_loop().call_at(due, self._idle_check)

    def _book(self, step: TurnStep) -> bool:
        """Take in the step's decision; True when the turn is over."""
        decision = step.decision
        if isinstance(decision, RunTools):
            self._pending = decision
        elif isinstance(decision, Done):
            self.finished = True
            self._history.extend(decision.history)
        elif isinstance(decision, Failed):
            self.finished = True
        return self.finished

    def cancel_step(self) -> None:
        """Abort: cancel the running step, if any, and every later one (loop thread only)."""
        self.abort_requested = True
        if self._scope is not None:
            self._scope.cancel()

    async def _next(self) -> TurnStep:
        if self._pending is not None:
            runs, self._pending = self._pending.runs, None
            return self.turn.on_tool_results(await self._run_tools(runs))
        if self._reader is None:
            return await self._open()
        return await self._read()

    def abort(self) -> TurnStep:
        self.finished = True
        return self.turn.on_abort()

    async def _open(self) -> TurnStep:
        import httpx

        body = self.turn.request_body(self._prior, self._schemas)
        self._parser = SseParser()
        client = self._processor._http_client()
        request = client.build_request(
            "POST",
            self._processor._url,
            # Compact, as JavaScript's JSON.stringify writes the official client's bodies (a lone
            # surrogate, which UTF-8 cannot encode, becomes its \uXXXX escape, as there).
            content=json_body(body),
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
            timeout=self._processor._request_timeout(),
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            return self.turn.on_error(LLMError(_map_transport_error(exc)))
        if not response.is_success:
            try:
                error_body = await _read_limited(response, _ERROR_BODY_LIMIT)
            except httpx.HTTPError:
                error_body = b""
            finally:
                await response.aclose()
            error = _api_error(
                response.status_code, error_body, response.headers.get("content-type")
            )
            return self.turn.on_error(LLMError(error))
        self._response = response
        self._reader = response.aiter_bytes()  # decoded (gzip), as it arrives
        return TurnStep()

    async def _read(self) -> TurnStep:
        import httpx

        assert self._reader is not None
        # Reads until some event completes; the idle deadline is the caller's (next_step's scope,
        # or run()'s watchdog).
        while True:
            try:
                data = await self._reader.__anext__()
            except StopAsyncIteration:
                await self._close_response()
                return self.turn.on_stream_end(self._parser.close())
            except httpx.HTTPError as exc:
                await self._close_response()
                return self.turn.on_error(LLMError(_map_transport_error(exc)))
            events = self._parser.feed(data)
            if events:
                return self.turn.on_events(events)

    async def _run_tools(self, runs: Sequence[ToolRun]) -> dict[str, Any]:
        import anyio

        results: dict[str, Any] = {}

        async def run_one(run: ToolRun) -> None:
            if run.arguments_error is not None:
                results[run.call_id] = self._error_result(ValueError(run.arguments_error))
                return
            tool = self._tools[run.name]
            try:
                if tool.is_async():
                    value = await tool.call(run.arguments)
                else:
                    value = await run_sync_off_loop(tool.call, run.arguments)
                    if inspect.isawaitable(value):  # a plain function that returned a coroutine
                        value = await value
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # noqa: BLE001 -- a tool's failure is its result
                value = self._error_result(exc)
            results[run.call_id] = value

        async with anyio.create_task_group() as task_group:
            for run in runs:
                task_group.start_soon(run_one, run)
        return results

    async def _close_response(self) -> None:
        import anyio

        response, self._response, self._reader = self._response, None, None
        if response is not None:
            # Shielded (and bounded) so that a cancelled turn still closes its connection.
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await response.aclose()

    async def aclose(self) -> None:
        self.finished = True
        await self._close_response()


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for data in response.aiter_bytes():
        body += data
        if len(body) >= limit:
            break
    return bytes(body[:limit])
