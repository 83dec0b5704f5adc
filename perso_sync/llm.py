"""LLM turns with client tools: ``ChatTool``, ``LlmProcessor`` and the chunks of ``process_llm``.

A turn (docs/PROTOCOL.md §6) is parsed by ``_sse.SseParser`` and booked by ``_llm_turn.LlmTurn``
(through ``_llm_common.TurnProgress``); two engines drive it:

- the ``process_llm`` iterator reads its stream on the thread that iterates it, with a
  process-wide sync ``httpx.Client`` (``_llm_caller``): chunks at the speed of the socket, no
  loop hop per read. Abort (any thread), ``close()``, ``break``, garbage collection, Ctrl-C and
  the deadlines end it and close its HTTP stream::

    processor = LlmProcessor(api_server=url, session_id=sid, client_tools=[weather])
    with processor.process_llm("What's the weather in Seoul?") as stream:
        for chunk in stream:
            if chunk.type == "message" and chunk.finish:
                print(chunk.message)

- ``process_chat`` / ``run_chat_turn`` (the avatar's turns) run on the runtime loop
  (``_llm_loop``, ``httpx.AsyncClient``), where ``clear_buffer`` cancels them.

Threads: async tools run as tasks on the loop, sync tools on worker threads, all concurrently,
for either engine; ``LlmProcessorCallbacks`` are delivered in order by a ``CallbackDispatcher``
(never on the loop thread). Session-scoped requests carry no API key.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from perso_sync import _endpoints
from perso_sync._callbacks import CallbackDispatcher
from perso_sync._llm_caller import CallerStream, sync_client
from perso_sync._llm_common import (
    CLOSE_TIMEOUT,
    TurnProgress,
    check_transport_side,
    error_result,
)
from perso_sync._llm_common import MessageHistory as MessageHistory  # the session's import
from perso_sync._llm_loop import TurnEngine, async_client
from perso_sync._llm_turn import (
    Done,
    ErrorChunk,
    Failed,
    LlmChunk,
    MessageChunk,
    ToolCallChunk,
    ToolResultChunk,
)
from perso_sync._runtime import get_runtime
from perso_sync._validate import check_json_text, check_text, check_timeout, refuse_loop_thread
from perso_sync.errors import InvalidInputError, LLMError, RuntimeUsageError
from perso_sync.models import ChatState

if TYPE_CHECKING:
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
DEFAULT_TOOL_ERROR_RESULT: Mapping[str, Any] = {"result": "error!"}


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

    Iterate it once; the turn runs on the thread that iterates it (its first ``next()`` sends
    the request). Leaving the ``with`` block, ``close()`` (also from another thread), ``break``
    (the stream is then collected) and an ``AbortSignal`` all end the turn and close the HTTP
    stream.
    """

    def __init__(self, stream: CallerStream) -> None:
        self._stream = stream
        self._next = stream.next_chunk

    def __iter__(self) -> LlmStream:
        iter(self._stream)
        return self

    def __next__(self) -> LlmChunk:
        try:
            return self._next()
        except ValueError:
            if self._stream.closing:  # closed by another thread just as this one went on
                raise StopIteration from None
            raise

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


class LlmProcessor:
    """LLM turns for one session id, with client tools and a message history.

    Works with any session id, with or without WebRTC. ``http_transport`` replaces the network,
    e.g. an ``httpx.MockTransport``: the :meth:`process_llm` iterator reads with its sync side
    (``httpx.BaseTransport``), :meth:`process_chat` with its async side
    (``httpx.AsyncBaseTransport``); a transport with only one side serves only the turns of that
    side, the other kind of turn raises :class:`InvalidInputError` naming what is missing. Call
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
        http_transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
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
        if http_transport is not None and not (
            hasattr(http_transport, "handle_request")
            or hasattr(http_transport, "handle_async_request")
        ):
            raise InvalidInputError(
                "http_transport must be an httpx.BaseTransport or httpx.AsyncBaseTransport"
            )
        self._transport = http_transport
        self._history = MessageHistory()
        # Set by a Session: called on the runtime loop when a turn starts (LLM, None) and ends
        # (None, LLM), so the session's chat states show the LLM working.
        self._state_listener: Callable[[ChatState | None, ChatState | None], None] | None = None
        # Built here, not on first use: it starts nothing, and two threads making their first
        # turn at once must not each build one (one would never be closed).
        self._dispatcher = CallbackDispatcher(on_error=self._callback_failed)
        # Over a custom transport only (else the process-wide ones): the loop side's, with the
        # runtime it belongs to, and the caller side's, with its process id (fork-safe).
        self._client: httpx.AsyncClient | None = None
        self._client_owner: object = None
        self._sync: tuple[int, httpx.Client] | None = None
        self._sync_lock = threading.Lock()

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
        empty message is refused (:class:`InvalidInputError`) before any request. The turn runs
        on the thread that iterates the stream (not on the runtime loop, where calling this
        raises :class:`~perso_sync.errors.RuntimeUsageError`).
        """
        message = _check_message(message)
        turn_tools = self._client_tools if tools is None else _check_tools(tools)
        refuse_loop_thread("process_llm()")
        if self._transport is not None:
            check_transport_side(self._transport, sync=True)
        progress = TurnProgress(message, turn_tools, self._history, error_result)
        return LlmStream(CallerStream(self, progress, abort))

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
        fixed_result = dict(tool_error_result)
        engine = TurnEngine(
            self,
            message,
            self._client_tools,
            lambda exc: dict(fixed_result),
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

    # -- plumbing ------------------------------------------------------------------------------

    def _callback_failed(self, exc: BaseException) -> None:
        import logging

        logging.getLogger("perso_sync.llm").error("an LlmProcessor callback raised", exc_info=exc)

    def _post_llm_state(
        self, add: ChatState | None, remove: ChatState | None, *, wait: bool = False
    ) -> None:
        # A process_llm turn starts or ends (the caller's thread): the session's listener runs on
        # the loop, as for process_chat; at the end we wait for it (bounded), so that the LLM
        # state is off once the stream has ended.
        listener = self._state_listener
        if listener is not None:
            runtime = get_runtime()
            if runtime.in_loop_thread():  # a stream collected on the loop
                listener(add, remove)
            else:
                ran = threading.Event()

                def on_loop() -> None:
                    try:
                        listener(add, remove)
                    finally:
                        ran.set()

                try:
                    runtime.call_soon_threadsafe(on_loop)
                except RuntimeUsageError:  # the runtime stopped (exit): its sessions with it
                    ran.set()
                if wait:
                    ran.wait(CLOSE_TIMEOUT)
        self._notify("on_chat_state_change", add, remove)

    def _notify(self, name: str, *args: Any) -> None:
        callback = getattr(self._callbacks, name)
        if callback is not None:
            self._dispatcher.submit(callback, *args)

    def _async_client(self) -> httpx.AsyncClient:
        """The loop side's client (on the runtime loop): the shared one, or ours over the custom
        transport (rebuilt with a new runtime, e.g. in a forked child)."""
        if self._transport is None:
            return async_client(None)
        runtime = get_runtime()
        if self._client is None or self._client_owner is not runtime:
            self._client = async_client(self._transport)
            self._client_owner = runtime
        return self._client

    def _sync_client(self) -> httpx.Client:
        """The caller side's client (any thread): the process-wide one, or ours over the custom
        transport (rebuilt in a forked child)."""
        if self._transport is None:
            return sync_client(None)
        with self._sync_lock:
            if self._sync is None or self._sync[0] != os.getpid():
                self._sync = (os.getpid(), sync_client(self._transport))
            return self._sync[1]

    def close(self) -> None:
        """Release this processor's resources and stop delivering callbacks. Idempotent."""
        client, self._client = self._client, None
        if client is not None and self._client_owner is get_runtime():
            get_runtime().call(client.aclose, timeout=CLOSE_TIMEOUT)
        with self._sync_lock:
            sync, self._sync = self._sync, None
        if sync is not None and sync[0] == os.getpid():
            sync[1].close()
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
