"""The loop side of a session: what runs on the runtime's event-loop thread.

:class:`SessionLoop` is the one object the :class:`perso_sync.session.Session` facade forwards
to. Its coroutines run only on the runtime loop (the facade hands them over with
``Runtime.call`` / ``Runtime.spawn``), and it is the WebRTC core's hooks object itself
(:class:`perso_sync._webrtc.CoreHooks`: ``on_server_message``, ``on_bad_message``,
``on_closed``, called on the loop, never blocking). It owns:

- the opening on the loop (ICE servers, peer connection, SDP exchange; docs/PROTOCOL.md §5);
- the chat states (the pure :class:`perso_sync._chat_state.ChatStateMachine`), the chat log,
  and the one SPEAKING timer that sleeps until the machine's deadline;
- the REST-only heartbeat;
- the chat turns (``process_chat``, voice-chat turns) and their cancel scopes, which
  ``clear_buffer`` and closing cancel;
- the server's messages (``stf``, ``stt``, ``stt-error``, the user's ``on_message`` watchers);
- speaking (``ttstf``), clearing, sending, the STF upload, the legacy voice chat's messages;
- closing: the first close, from whichever thread, decides how the session ended.

The bookkeeping section (the methods without ``async`` under "bookkeeping") is the exception
to "loop only": chat states also move from the caller's thread (TTS, STT recording, an STF
upload) and a close may start anywhere, so those methods take the session's one lock, which
is held only for bookkeeping, never during I/O or a user callback.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as _dt
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, BinaryIO, Generic, TypeVar, cast

import attrs

from perso_sync.errors import (
    InvalidResponseError,
    PersoError,
    RecordingError,
    SessionClosedError,
    STFError,
    STTError,
)
from perso_sync.models import Chat, ChatState, SessionEvent

if TYPE_CHECKING:
    import anyio

    from perso_sync._chat_state import ChatStateMachine
    from perso_sync._runtime import Runtime
    from perso_sync._session_subscribers import SessionSubscribers
    from perso_sync._webrtc import CoreOptions, WebRtcCore
    from perso_sync.audio import UplinkAudio
    from perso_sync.client import PersoClient
    from perso_sync.llm import LlmProcessor, MessageHistory
    from perso_sync.models import SessionInfo

__all__ = ["SessionLoop"]

_log = logging.getLogger("perso_sync.session")

#: How a lost session ends (no server ping, connection failed, heartbeat failed).
_LOST = (408, "Request Timeout")

_T = TypeVar("_T")


class _RestOnly(Exception):
    """The session info says REST-only: the exchange must not be sent (internal signal)."""


class _Outcome(Generic[_T]):
    """The value or the error of one awaitable run as a task, for whoever awaits it.

    Loop-side only. Errors are kept as values so that several tasks can look at one outcome
    and the opening code decides which error the caller sees.
    """

    def __init__(self, fn: Callable[..., Awaitable[_T]], *args: Any) -> None:
        import anyio

        self._fn = fn
        self._args = args
        self.done = anyio.Event()
        self._value: _T | None = None
        self.error: Exception | None = None

    async def run(self) -> None:
        try:
            self._value = await self._fn(*self._args)
        except Exception as exc:  # noqa: BLE001 -- handed to whoever awaits the outcome
            self.error = exc
        self.done.set()

    def get(self) -> _T:
        """The value, or the error raised; only once ``done`` is set."""
        if self.error is not None:
            raise self.error
        return cast("_T", self._value)

    async def wait(self) -> _T:
        await self.done.wait()
        return self.get()


class SessionLoop:
    """The loop-side state and work of one session (see the module docstring)."""

    def __init__(
        self,
        *,
        client: PersoClient,
        session_id: str,
        width: int,
        height: int,
        heartbeat_interval: float,
        runtime: Runtime,
        lock: threading.RLock,
        subscribers: SessionSubscribers,
        processor: LlmProcessor,
    ) -> None:
        from perso_sync._chat_state import ChatStateMachine
        from perso_sync.llm import MessageHistory

        self._client = client
        self._session_id = session_id
        self.width = width
        self.height = height
        self._heartbeat_interval = heartbeat_interval
        self._runtime = runtime
        self._lock = lock
        self._subscribers = subscribers
        self.processor = processor
        # Two histories, as in the official client: the processor's for process_llm (and
        # get_message_history), the session's own for process_chat / process_ttstf.
        self.chat_history: MessageHistory = MessageHistory()

        #: Signalled whenever chat states may have changed (wait_until_idle waits on it).
        self.idle = threading.Condition(lock)
        self.machine: ChatStateMachine = ChatStateMachine()
        self.chat_log: list[Chat] = []
        self._llm_turns = 0  # running LLM turns (guarded by the lock: process_llm ends anywhere)
        self._tts_calls = 0

        self.core: WebRtcCore | None = None
        #: Legacy voice chat's outgoing audio (a session opened with ``voice_chat=True``).
        self.uplink: UplinkAudio | None = None
        self.closing = False
        self.closed = False
        #: (code, reason) once closed.
        self.closed_as: tuple[int, str] | None = None
        self.closed_event = threading.Event()
        self._tasks: set[concurrent.futures.Future[Any]] = set()
        #: Closing steps of the caller side (the STT recording), run once the turns are cancelled.
        self.on_close_steps: list[Callable[[], None]] = []
        # Touched only on the loop thread.
        self._timer_wake: anyio.Event | None = None
        self._turn_scopes: set[anyio.CancelScope] = set()

    # ------------------------------------------------------------------ opening (loop)

    async def connect(
        self, options: CoreOptions, info_future: concurrent.futures.Future[SessionInfo]
    ) -> WebRtcCore | None:
        """The WebRTC core once ready, or None for a REST-only session; ``info_future`` gets
        the session info (or its GET's error) from the caller's thread.

        What may overlap (docs/PROTOCOL.md §5): the ICE-servers GET needs nothing from the
        session info, so both GETs start at once. The peer connection and its offer need only
        the ICE servers (they are built into the connection), so they are made as soon as those
        arrive, while the info may still be in flight. The exchange needs the info: only a
        WebRTC session (STF capability) may POST an offer, so it waits for it. A REST-only
        session thus also sends the ICE-servers GET, whose answer is dropped. Errors keep the
        sequential order's precedence: a failed info wins over a failed ICE-servers GET.
        """
        import asyncio

        import anyio

        from perso_sync._runtime import run_sync_off_loop
        from perso_sync._webrtc import WebRtcCore, _wait_first

        self._timer_wake = anyio.Event()
        client, session_id = self._client, self._session_id
        if self.uplink is not None:  # made here: an aiortc track belongs to the loop
            options = attrs.evolve(options, outgoing_audio=self.uplink.track())
        info: _Outcome[SessionInfo] = _Outcome(asyncio.wrap_future, info_future)
        ice: _Outcome[list[dict[str, Any]]] = _Outcome(
            run_sync_off_loop, client.get_ice_servers, session_id
        )

        async def webrtc() -> bool:
            """Whether this is a WebRTC session; the info's error when its GET failed."""
            return (await info.wait()).uses_webrtc

        async def exchange(offer: dict[str, str]) -> dict[str, str]:
            if not await webrtc():
                raise _RestOnly
            # A blocking requests call: it must not run on the loop thread.
            return await run_sync_off_loop(client.exchange_sdp, session_id, offer)

        async def open_core() -> WebRtcCore | None:
            await _wait_first(info.done, ice.done)
            if not ice.done.is_set() and not await webrtc():
                return None  # REST-only: the ICE servers are not needed
            await ice.done.wait()
            if ice.error is not None and not await webrtc():
                return None
            try:
                return await WebRtcCore.connect(
                    ice_servers=ice.get(),
                    exchange=exchange,
                    width=self.width,
                    height=self.height,
                    hooks=self,
                    options=options,
                )
            except _RestOnly:
                return None  # the offer was never sent; connect closed what it had opened

        opened = _Outcome(open_core)
        # Both GETs are waited for even when the other one already decided the outcome: each
        # is bounded by its HTTP timeout, and nothing of the opening outlives the call. (The
        # info's own thread is the caller's, which hands it over before it waits for us.)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(info.run)
            tasks.start_soon(ice.run)
            tasks.start_soon(opened.run)
        self.core = opened.get()
        return self.core

    # ------------------------------------------------------------------ the core's hooks (loop)

    def on_server_message(self, msg_type: str, data: dict[str, Any]) -> None:
        # ON the loop, from the core: never block here.
        if self._subscribers.watches_messages():
            self._subscribers.deliver_message(msg_type, data)
        if msg_type == "stf":
            duration = data.get("duration")
            if isinstance(duration, bool) or not isinstance(duration, (int, float)):
                _log.debug("stf without a numeric duration: %r", data)
                duration = 0.0
            try:
                duration_ms = float(duration)
            except OverflowError:  # an int too large for a float: the machine drops it
                duration_ms = math.inf
            self.apply_state(lambda machine: machine.on_stf(duration_ms, time.monotonic()))
            if self._timer_wake is not None:
                self._timer_wake.set()
        elif msg_type == "stt":
            self.apply_state(lambda machine: machine.analyzing_down())
            text = data.get("text")
            text = text if isinstance(text, str) else ""
            with self._lock:
                callback = self._subscribers.stt_callback.current
            if callback is not None:
                self._subscribers.dispatcher.submit(callback, text)
            elif text.strip():
                self.spawn(self._voice_chat_turn, text)
        elif msg_type == "stt-error":
            self.apply_state(lambda machine: machine.analyzing_down())
        else:
            _log.debug("ignoring server message %r", msg_type)

    def on_bad_message(self, error: InvalidResponseError) -> None:
        self._subscribers.report_error(error)

    def on_closed(self, manual: bool, code: int, reason: str) -> None:
        self.finish_close(manual, code, reason)

    # ------------------------------------------------------------------ background jobs (loop)

    async def speaking_timer(self) -> None:
        # The one SPEAKING timer of the session: sleep until the machine's deadline, tick, and
        # start over whenever an stf moves the deadline (it may move earlier or later).
        import anyio

        if self._timer_wake is None:  # not opened by connect (a session without WebRTC)
            self._timer_wake = anyio.Event()
        while True:
            wake = self._timer_wake
            assert wake is not None
            with self._lock:
                deadline = self.machine.deadline()
            if deadline is None:
                await wake.wait()
            else:
                delay = deadline - time.monotonic()
                if delay <= 0:
                    self.apply_state(lambda machine: machine.tick(time.monotonic()))
                    continue
                with anyio.move_on_after(delay):
                    await wake.wait()
            if wake.is_set():
                self._timer_wake = anyio.Event()

    async def heartbeat(self) -> None:
        import anyio

        from perso_sync._runtime import run_sync_off_loop

        while True:
            await anyio.sleep(self._heartbeat_interval)
            try:
                await run_sync_off_loop(
                    self._client.create_session_event,
                    self._session_id,
                    SessionEvent.SESSION_DURING,
                )
            except PersoError as exc:
                self._subscribers.report_error(exc)
                self.finish_close(False, *_LOST)
                return

    # ------------------------------------------------------------------ chat turns (loop)

    async def chat_turn(self, message: str) -> str:
        import anyio

        spoken: list[str] = []

        def on_delta(text: str) -> None:
            spoken.append(text)
            speech = text.strip()  # emoji already removed; sent trimmed, empty ones skipped
            if self.core is not None and speech:
                try:
                    self._speak_now(speech)
                except PersoError as exc:
                    self._subscribers.report_error(exc)

        def on_log(text: str, is_user: bool) -> None:
            self.append_chat_log(text, is_user=is_user)

        with anyio.CancelScope() as scope:
            if self.closed:
                raise SessionClosedError(f"session {self._session_id} is closed")
            self._turn_scopes.add(scope)
            try:
                return await self.processor.run_chat_turn(
                    message,
                    on_delta=on_delta,
                    on_state=self.llm_state_changed,
                    on_log=on_log,
                    history=self.chat_history,
                )
            finally:
                self._turn_scopes.discard(scope)
        if self.closed:
            raise SessionClosedError(f"session {self._session_id} closed during the chat turn")
        return "".join(spoken)  # cancelled by clear_buffer: what was said so far

    async def _voice_chat_turn(self, text: str) -> None:
        try:
            await self.chat_turn(text)
        except SessionClosedError:
            return
        except PersoError as exc:
            self._subscribers.report_error(exc)

    def cancel_turns_on_loop(self) -> None:
        for scope in list(self._turn_scopes):
            scope.cancel()

    # ------------------------------------------------------------------ the message channel (loop)

    async def speak(self, text: str) -> None:
        self._speak_now(text)

    async def speak_reply(self, text: str, message: str) -> None:
        # process_ttstf: ``message`` as said is the assistant's reply, as the official client
        # records it (in the chat history process_chat sends, and in the chat log).
        self._speak_now(text)
        self.chat_history.append({"role": "assistant", "type": "message", "content": message})
        self.append_chat_log(message, is_user=False)

    def _speak_now(self, text: str) -> None:
        # On the loop: ANALYZING counts this ttstf until the server's stf answers it.
        core = self.require_core("speech")
        self.apply_state(lambda machine: machine.analyzing_up())
        try:
            core.send("ttstf", {"message": text})
        except BaseException:
            self.apply_state(lambda machine: machine.analyzing_down())
            raise

    async def send(self, msg_type: str, data: dict[str, Any]) -> None:
        self.require_core(msg_type).send(msg_type, data)

    async def clear(self) -> None:
        # Cancel turns first: nothing they would still say may slip in after clear-buffer.
        self.cancel_turns_on_loop()
        core = self.core
        if core is not None:
            core.send("clear-buffer", {})
        self.apply_state(lambda machine: machine.clear())
        if self._timer_wake is not None:
            self._timer_wake.set()

    async def upload_stf(
        self,
        reader: BinaryIO,
        total: int | None,
        progress: Callable[[int, int | None], None] | None,
        audio_format: str,
        message: str,
        upload_timeout: float,
    ) -> str:
        core = self.require_core("process_stf")
        file_ref = await core.upload_file(
            reader, total=total, progress=progress, timeout=upload_timeout
        )
        core.send("stf", {"message": message, "file_ref": file_ref, "format": audio_format})
        return file_ref

    async def start_recording(self, path: str) -> None:
        await self.require_core("record").start_recording(path)

    # ------------------------------------------------------------------ legacy voice chat (loop)

    async def start_voice(self, uplink: UplinkAudio, source: Any) -> Any:
        # record-start first: the server records from it, then the source's audio follows.
        self.require_core("start_voice_chat").send("record-start", {})
        return uplink.play(source)

    async def play_voice(self, feed: Any) -> None:
        failure = await feed.run()
        if failure is not None:  # the source broke off: the server hears silence from here on
            self._subscribers.report_error(
                STTError(RecordingError(f"the voice chat source failed: {failure}"))
            )

    async def end_voice_chat(self, data: dict[str, Any]) -> None:
        core = self.require_core("stop_voice_chat")
        if self.uplink is not None:
            self.uplink.stop()
        self.apply_state(lambda machine: machine.analyzing_up())
        self.apply_state(lambda machine: machine.set(ChatState.RECORDING, False))
        try:
            core.send("record-end-stt", data)
        except BaseException:
            self.apply_state(lambda machine: machine.analyzing_down())
            raise

    # ------------------------------------------------------------------ bookkeeping (any thread)

    def require_core(self, what: str) -> WebRtcCore:
        core = self.core
        if core is None:
            raise STFError(f"{what} requires WebRTC (STF mode); this is a REST-only session")
        return core

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop until it ends or the session closes."""
        future: concurrent.futures.Future[Any] = self._runtime.spawn(fn, *args)
        with self._lock:
            if self.closed:
                future.cancel()
                return
            self._tasks.add(future)
        future.add_done_callback(self._task_done)

    def _task_done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._tasks.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            _log.error("session %s background task failed", self._session_id, exc_info=error)
            self._subscribers.report_error(error)

    def apply_state(
        self, change: Callable[[ChatStateMachine], frozenset[ChatState] | None]
    ) -> None:
        # Any thread. The lock keeps the machine consistent and the notifications in the order
        # of the changes; the dispatcher runs the subscribers later, off the loop.
        with self._lock:
            active = change(self.machine)
            if active is None or self.closed:
                return
            self._subscribers.notify_states(active)
            self.idle.notify_all()

    def set_state(self, state: ChatState, on: bool) -> None:
        self.apply_state(lambda machine: machine.set(state, on))

    def llm_state_changed(self, add: ChatState | None, remove: ChatState | None) -> None:
        # Any thread. Concurrent turns (process_chat and process_llm alike) share one LLM state:
        # it is off only once every turn is done.
        with self._lock:
            if add is ChatState.LLM:
                self._llm_turns += 1
            elif remove is ChatState.LLM:
                self._llm_turns = max(0, self._llm_turns - 1)
                if self._llm_turns:
                    return
            for state, on in ((add, True), (remove, False)):
                if state is not None:
                    self.set_state(state, on)

    def tts_call(self, *, done: bool) -> None:
        # Concurrent process_tts calls share one TTS state: off once the last one is done.
        with self._lock:
            self._tts_calls += -1 if done else 1
            on = self._tts_calls > 0
            self.set_state(ChatState.TTS, on)

    def append_chat_log(self, text: str, *, is_user: bool) -> None:
        entry = Chat(is_user=is_user, text=text, timestamp=_dt.datetime.now(_dt.timezone.utc))
        with self._lock:
            self.chat_log.insert(0, entry)  # newest first, as in the official SDK
            if self.closed:
                return
            self._subscribers.notify_log(self.chat_log)

    def active_states(self) -> frozenset[ChatState]:
        with self._lock:
            return self.machine.active

    def chat_log_copy(self) -> list[Chat]:
        with self._lock:
            return list(self.chat_log)

    def wait_idle(self, timeout: float | None) -> bool | None:
        """Block (never on the loop) until no chat state is active: True, or False after
        ``timeout``; None when the session is or gets closed."""
        with self.idle:
            idle = self.idle.wait_for(lambda: self.closed or not self.machine.active, timeout)
            return None if self.closed else bool(idle)

    # ------------------------------------------------------------------ closing (any thread)

    def begin_close(self) -> bool:
        """Mark the session closing; True for the first caller, who then closes it."""
        with self._lock:
            first = not self.closing
            self.closing = True
        return first

    def finish_close(self, manual: bool, code: int, reason: str) -> None:
        # Any thread, idempotent: the first caller decides manual/code/reason.
        with self._lock:
            if self.closed:
                return
            self.closing = True
            self.closed = True
            self.closed_as = (code, reason)
            callbacks = self._subscribers.take_close_callbacks()
            self.idle.notify_all()
        dispatcher = self._subscribers.dispatcher
        for callback in callbacks:
            dispatcher.submit(callback, manual)
        # Callbacks already queued still run; nothing new is accepted.
        dispatcher.close()
        self.cancel_tasks()
        self._cancel_turns()
        for step in self.on_close_steps:
            step()
        self._close_processor()
        self.closed_event.set()
        if not manual:
            _log.warning("session %s lost: %s %s", self._session_id, code, reason)

    def abandon(self) -> None:
        """Opening failed half-way: stop our own jobs without telling on_close subscribers
        (there are none yet). The core, if any, was closed by connect itself."""
        with self._lock:
            self.closing = True
            self.closed = True
            self.closed_as = _LOST
        self.cancel_tasks()
        self._subscribers.dispatcher.close()
        self._close_processor()
        self.closed_event.set()

    def cancel_tasks(self) -> None:
        with self._lock:
            tasks = list(self._tasks)
            self._tasks.clear()
        for future in tasks:
            future.cancel()

    def _cancel_turns(self) -> None:
        if self._runtime.in_loop_thread():
            self.cancel_turns_on_loop()
            return
        with contextlib.suppress(PersoError):  # the runtime stopped: no turn runs anymore
            self._runtime.call_soon_threadsafe(self.cancel_turns_on_loop)

    def run_blocking(self, fn: Callable[..., object], *args: Any) -> None:
        # Closing runs on any thread, the loop thread included (a lost connection): blocking
        # work asked for there goes to a worker thread instead; anywhere else it runs now.
        if not self._runtime.in_loop_thread():
            fn(*args)
            return
        from perso_sync._runtime import run_sync_off_loop

        with contextlib.suppress(PersoError):  # the runtime stopped: nothing left to release
            self._runtime.start_soon(run_sync_off_loop, fn, *args)

    def _close_processor(self) -> None:
        # Releases the LLM HTTP connections; LlmProcessor.close() blocks on the loop.
        self.run_blocking(self._close_processor_now)

    def _close_processor_now(self) -> None:
        try:
            self.processor.close()
        except PersoError as exc:
            _log.debug("closing the LLM processor of %s: %s", self._session_id, exc)
