"""The sync ``Session`` facade: one live conversation with an AI human.

A :class:`Session` is made by :meth:`perso_sync.PersoClient.create_session`
(docs/PROTOCOL.md §5) and is either

- a **WebRTC session** (the session's capability has ``STF_ONPREMISE`` or ``STF_WEBRTC``): an
  aiortc peer connection run by :class:`perso_sync._webrtc.WebRtcCore` on the runtime loop, with
  the ``message`` channel, the avatar's audio/video, pings and the liveness watchdog; or
- a **REST-only session**: no WebRTC at all, ``SESSION_START`` then a ``SESSION_DURING``
  heartbeat; the LLM, TTS and STT calls work, avatar speech does not.

**The thread model** (written here once; the modules below only say which side they are on).

- *The caller's thread* runs every public method of :class:`Session`. Each one validates its
  input first (bad input never reaches the loop), then either does plain REST right there (TTS,
  STT, session events, the session info while opening; :mod:`perso_sync._session_caller`),
  reads a ``process_llm`` stream right there (:mod:`perso_sync._llm_caller`), records audio
  right there (:mod:`perso_sync._session_stt_caller`), or hands the work to the loop side.
  The facade keeps no loop-side state: only the session's identity and the objects it
  forwards to.
- *The runtime loop thread* (one per process, :mod:`perso_sync._runtime`) runs
  :class:`perso_sync._session_loop.SessionLoop`: the WebRTC core and its hooks, the chat
  states and the SPEAKING timer, the heartbeat, the chat turns and their cancellation, the
  server's messages. A call crosses with ``Runtime.call(coroutine, ..., timeout=...)`` (the
  caller blocks, bounded, and gets the result or the loop's exception; refused on the loop
  thread itself), ``Runtime.spawn`` (a background job; the session cancels it at close) or
  ``call_soon_threadsafe`` (fire and forget: cancelling turns while closing).
- *Worker threads* (anyio's, under the runtime's two process-wide limiters) run the blocking
  work the loop must not: the ICE-servers GET, the SDP exchange, the heartbeat POST, the LLM
  processor's close, a recorder's stop when a session is closed from the loop; and every user
  callback. Callbacks (chat states, chat log, ``on_close``, the error handler, the STT
  result, ``on_message``, STF progress) are queued from whichever thread noticed the event on
  the session's one :class:`perso_sync._callbacks.CallbackDispatcher`
  (:mod:`perso_sync._session_subscribers`), which runs them in submission order on a worker
  thread: never on the loop, never while a lock is held.
- *Shared bookkeeping* (the chat-state machine, the chat log, the subscriber tables, whether
  the session is closing) is guarded by one lock, created here and shared by those objects;
  it is held only to read or change that bookkeeping, never during I/O or a user callback.
  Closing may start on any thread (``stop_session`` on the caller's, a lost connection or a
  failed heartbeat on the loop); the first close decides how the session ended.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

import attrs

from perso_sync._session_caller import LOOP_CALL_TIMEOUT, MediaRecording, SessionCallerSide
from perso_sync._session_loop import SessionLoop
from perso_sync._session_stt_caller import SttRecording
from perso_sync._session_subscribers import SessionSubscribers
from perso_sync._validate import (
    check_json_text,
    check_seconds,
    check_text,
    check_timeout,
    refuse_loop_thread,
)
from perso_sync.errors import (
    InvalidInputError,
    PersoError,
    PersoTimeoutError,
    SessionClosedError,
    STFError,
)
from perso_sync.models import Chat, ChatState, SessionEvent

if TYPE_CHECKING:
    from perso_sync._runtime import Runtime
    from perso_sync.client import PersoClient
    from perso_sync.llm import AbortSignal, ChatTool, LlmProcessor, LlmStream
    from perso_sync.models import SessionInfo

__all__ = ["CloseStatus", "MediaRecording", "Session"]

_log = logging.getLogger("perso_sync.session")

#: Extra seconds granted to the loop side beyond the core's own connect / close / upload bounds.
_LOOP_CALL_MARGIN = 5.0
#: Seconds ``process_stf`` waits for its queued ``progress`` callbacks before returning.
_PROGRESS_FLUSH_TIMEOUT = 5.0
#: Seconds interpreter exit waits for a session's queued callbacks (on_close) to run.
_EXIT_FLUSH_TIMEOUT = 1.0
#: Whole-transfer bound of one STF upload (docs/PROTOCOL.md §8).
_STF_UPLOAD_TIMEOUT = 30.0

#: Defaults of a session's LLM turns: longest silence between events, and the whole turn.
LLM_IDLE_TIMEOUT = 60.0
LLM_TURN_TIMEOUT = 300.0

_MANUAL = (200, "OK")


@attrs.frozen
class CloseStatus:
    """Where a session stands: ``live`` while open; once closed, ``code``/``reason`` say how.

    ``CloseStatus(True, None, None)`` while open; ``CloseStatus(False, 200, "OK")`` after
    :meth:`Session.stop_session`; ``CloseStatus(False, 408, "Request Timeout")`` when the session
    was lost (no server ping within ``ping_timeout``, connection failed, heartbeat failed).
    """

    live: bool
    code: int | None = None
    reason: str | None = None


class Session(SessionCallerSide):
    """A live session with an AI human (use :meth:`perso_sync.PersoClient.create_session`).

    Usable as a context manager: leaving the ``with`` block calls :meth:`stop_session`.

    **Threads.** A session may be shared by several threads:

    - Every public method is thread-safe. The chat-state machine, the chat log and the callback
      lists are guarded by one lock that is held only for bookkeeping, never during I/O or
      while a user callback runs.
    - These may run concurrently from several threads: :meth:`process_chat`,
      :meth:`process_llm` (each returns its own stream), :meth:`process_ttstf`,
      :meth:`process_tts`, :meth:`transcribe_audio`, :meth:`transcribe_audio_detailed`,
      :meth:`process_stf` (each upload has its own ``file`` channel), :meth:`clear_buffer`,
      :meth:`change_size`, :meth:`set_template`, :meth:`log_session_event`,
      :meth:`wait_until_idle`, :meth:`frames` (several iterators may run at once),
      :meth:`send_message`, :meth:`wait_voice_chat_sent` and the subscribe / callback
      registration methods (:meth:`on_message` included). Two concurrent ``process_chat`` turns both
      run; their text goes to the avatar in the order it arrives, and each turn's history is
      appended when that turn finishes.
    - One STT recording at a time: :meth:`start_process_stt` / :meth:`stop_process_stt` are
      serialised by a lock, and a second start while recording raises :class:`RecordingError`.
      Likewise one :meth:`record` at a time, and one legacy voice chat
      (:meth:`start_voice_chat` / :meth:`stop_voice_chat`).
    - :meth:`stop_session` may be called from any thread, at any time, several times; it
      cancels running chat turns (their callers get :class:`SessionClosedError`) and waits for
      the connection to close.
    - Callbacks (chat states, chat log, on_close, error handler, STT result, STF progress) run
      in submission order on a worker thread, never on the runtime's loop thread, so a slow
      callback never delays pings. Calling session methods from a callback is fine;
      :meth:`wait_until_idle` and :meth:`process_chat` from a callback block only that
      session's later callbacks.
    - Never call blocking methods from the runtime's loop thread (inside an async
      ``ChatTool.call``): that raises :class:`perso_sync.errors.RuntimeUsageError`.
    - A session belongs to the process that opened it: after ``os.fork()`` every method of it
      raises :class:`perso_sync.errors.RuntimeUsageError` in the child.
    - Closing the :class:`perso_sync.PersoClient` that opened it closes the session first
      (``on_close(True)``).

    **After close** (:attr:`closed` is True) every method raises :class:`SessionClosedError`,
    except :attr:`session_id`, :meth:`get_session_id`, :attr:`closed`, :attr:`close_status`,
    :meth:`get_message_history`, :attr:`last_recorded_audio_file`, :meth:`is_stt_recording`
    and :meth:`stop_session` (a no-op then).
    """

    # ------------------------------------------------------------------ construction

    def __init__(
        self,
        *,
        client: PersoClient,
        session_id: str,
        width: int,
        height: int,
        client_tools: Sequence[ChatTool],
        ping_timeout: float,
        heartbeat_interval: float,
        llm_timeout: float | None = LLM_IDLE_TIMEOUT,
        llm_turn_timeout: float | None = LLM_TURN_TIMEOUT,
    ) -> None:
        """Internal: use :meth:`perso_sync.PersoClient.create_session`."""
        from perso_sync._runtime import get_runtime
        from perso_sync.llm import LlmProcessor

        # A forked child inherits this object but not the runtime thread behind it.
        self._pid = os.getpid()
        self._client = client
        self._session_id = session_id
        self._ping_timeout = ping_timeout
        self._runtime: Runtime = get_runtime()

        # The one bookkeeping lock, shared by the loop side, the subscriber tables and the STT
        # recording: held only for bookkeeping, never during I/O or a user callback.
        lock = threading.RLock()
        self._subscribers = SessionSubscribers(lock, session_id)
        self._processor: LlmProcessor = LlmProcessor(
            api_server=client.api_server,
            session_id=session_id,
            client_tools=list(client_tools),
            timeout=llm_timeout,
            turn_timeout=llm_turn_timeout,
        )
        self._loop = SessionLoop(
            client=client,
            session_id=session_id,
            width=width,
            height=height,
            heartbeat_interval=heartbeat_interval,
            runtime=self._runtime,
            lock=lock,
            subscribers=self._subscribers,
            processor=self._processor,
        )
        self._processor._state_listener = self._loop.llm_state_changed
        self._stt = SttRecording(
            runtime=self._runtime,
            loop=self._loop,
            subscribers=self._subscribers,
            lock=lock,
            call_loop=self._call_loop,
        )
        self._loop.on_close_steps.append(self._stt.close)

    @classmethod
    def _open(
        cls,
        client: PersoClient,
        session_id: str,
        *,
        width: int,
        height: int,
        client_tools: Iterable[ChatTool] = (),
        connect_timeout: float = 5.0,
        ping_timeout: float = 30.0,
        heartbeat_interval: float = 10.0,
        receive_video: bool = True,
        voice_chat: bool = False,
        llm_timeout: float | None = LLM_IDLE_TIMEOUT,
        llm_turn_timeout: float | None = LLM_TURN_TIMEOUT,
    ) -> Session:
        """Open a session (docs/PROTOCOL.md §5); :meth:`PersoClient.create_session` calls this.

        Two round trips to ready: the session info (in the caller's thread) and the ICE servers
        (in a worker thread, driven from the runtime loop) are fetched together, the peer
        connection and its offer are built as soon as the ICE servers are in, then the SDP
        exchange. ``SESSION_START`` of a REST-only session runs in the caller's thread.

        Timeouts: each REST call (session info, ICE servers, the ``exchange`` POST) is bounded
        by the client's HTTP timeout; ``connect_timeout`` is the ready timeout, counted from
        the moment the server's answer is applied (the exchange returned and the remote
        description is set) until a remote track arrived and the ``message`` channel is open,
        else :class:`perso_sync.errors.Timeout`; creating the offer has a bound of the same
        length. ``ping_timeout``: seconds without a server ping before the session is closed as
        lost. ``heartbeat_interval``: seconds between ``SESSION_DURING`` events of a REST-only
        session. ``receive_video``: ``False`` skips video decoding (no frames, no
        ``video_track``): at 1280×720 and 10 fps that is about 40 % of an idle session's CPU
        (measured: ~6 % of a core with video, ~3 % without). ``voice_chat=True`` sends audio to
        the server for the deprecated legacy voice chat (:meth:`start_voice_chat`): the offer
        then carries an outgoing audio track (silence until a voice chat plays a source), as the
        official SDK's ``enableVoiceChat`` adds the microphone track; ignored on a REST-only
        session. ``llm_timeout`` / ``llm_turn_timeout``: seconds the session's LLM turns may go
        without an event / take in all (60 s and 300 s by default; None = no limit; see
        :class:`perso_sync.LlmProcessor`). A failure half-way closes everything opened so far
        and raises the error of the first request in protocol order (the session info's before
        the ICE servers').
        """
        if not isinstance(session_id, str) or not session_id.strip():
            raise InvalidInputError("session_id must be a non-empty string")
        _check_size(width, height)
        check_seconds("connect_timeout", connect_timeout)
        check_seconds("ping_timeout", ping_timeout)
        check_seconds("heartbeat_interval", heartbeat_interval)
        if not isinstance(voice_chat, bool):
            raise InvalidInputError(f"voice_chat must be True or False, not {voice_chat!r}")
        check_timeout("llm_timeout", llm_timeout)
        check_timeout("llm_turn_timeout", llm_turn_timeout)
        tools = list(client_tools)

        # Built first: it validates the client tools before any request is sent.
        session = cls(
            client=client,
            session_id=session_id,
            width=width,
            height=height,
            client_tools=tools,
            ping_timeout=ping_timeout,
            heartbeat_interval=heartbeat_interval,
            llm_timeout=llm_timeout,
            llm_turn_timeout=llm_turn_timeout,
        )
        if voice_chat:
            from perso_sync.audio import UplinkAudio

            session._loop.uplink = UplinkAudio()
        try:
            session._connect(connect_timeout, receive_video)
            if session._loop.core is None:
                client.create_session_event(session_id, SessionEvent.SESSION_START)
                session._loop.spawn(session._loop.heartbeat)
        except BaseException:
            session._abandon()
            raise
        from perso_sync._runtime import register_closable

        register_closable(session)
        return session

    def _connect(self, connect_timeout: float, receive_video: bool) -> None:
        """Session info, ICE servers and, for a WebRTC session, the connection (on the loop)."""
        from perso_sync._webrtc import CoreOptions

        options = CoreOptions(
            connect_timeout=connect_timeout,
            ping_timeout=self._ping_timeout,
            receive_video=receive_video,
        )
        # The loop side starts with the ICE-servers GET while this thread fetches the info (no
        # extra thread for it), then hands it over.
        self._runtime._refuse_loop_thread("create_session()")  # before anything is started
        info: concurrent.futures.Future[SessionInfo] = concurrent.futures.Future()
        opening = self._runtime.spawn(self._loop.connect, options, info)
        try:
            try:
                session_info = self._client.get_session_info(self._session_id)
            except Exception as exc:  # noqa: BLE001 -- raised by the loop side, in its order
                with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled
                    info.set_exception(exc)
            else:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    info.set_result(session_info)
            # No overall timeout: every step bounds itself (the HTTP timeouts, the offer and
            # ready timeouts), and the ready timeout must not start before the exchange answered.
            core = self._runtime.wait(opening, what=self._loop.connect)
        except BaseException:
            opening.cancel()  # e.g. Ctrl-C during the info GET: the loop side stops too
            raise
        if core is not None:
            self._loop.spawn(self._loop.speaking_timer)

    def _abandon(self) -> None:
        # Opening failed half-way: the loop side stops its jobs, then a core that connect
        # handed over is closed (one that failed in connect closed itself).
        self._loop.abandon()
        core = self._loop.core
        if core is not None and not core.closed:
            with contextlib.suppress(PersoError):
                self._runtime.call(core.close, timeout=LOOP_CALL_TIMEOUT)

    # ------------------------------------------------------------------ identity and status

    @property
    def session_id(self) -> str:
        """The session id this session was opened with."""
        return self._session_id

    def get_session_id(self) -> str:
        """The session id (the JS ``getSessionId()``)."""
        return self._session_id

    @property
    def closed(self) -> bool:
        """True once the session is closed (by :meth:`stop_session` or lost)."""
        return self._loop.closed

    @property
    def close_status(self) -> CloseStatus:
        """``CloseStatus(live, code, reason)``; see :class:`CloseStatus`."""
        closed_as = self._loop.closed_as
        return CloseStatus(True) if closed_as is None else CloseStatus(False, *closed_as)

    @property
    def uses_webrtc(self) -> bool:
        """True for a WebRTC session, False for a REST-only session."""
        return self._loop.core is not None

    def __repr__(self) -> str:
        kind = "webrtc" if self._loop.core is not None else "rest-only"
        state = "closed" if self._loop.closed else "open"
        return f"Session(session_id={self._session_id!r}, {kind}, {state})"

    def __enter__(self) -> Session:
        self._ensure_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_session()

    # ------------------------------------------------------------------ LLM and speech

    def process_llm(
        self,
        message: str,
        tools: Sequence[ChatTool] | None = None,
        abort: AbortSignal | None = None,
    ) -> LlmStream:
        """Stream one LLM turn as chunks, with no avatar speech and no chat log.

        Returns an :class:`perso_sync.llm.LlmStream` (iterator, context manager, ``close()``)
        of ``MessageChunk`` / ``ToolCallChunk`` / ``ToolResultChunk`` / ``ErrorChunk``.
        ``message`` chunks accumulate the whole turn's text (every round, across tool calls);
        exactly one has ``finish=True``: the last chunk of a successful turn (or of an aborted
        one that received text), with the whole text. ``ChatState.LLM`` is on while the turn
        runs. ``tools`` overrides the session's client tools for this turn; ``abort`` cancels
        it. Works on REST-only sessions too. Empty-after-trim messages raise
        :class:`InvalidInputError` before any request.

        The turn uses and extends the LLM history (:meth:`get_message_history`), which is not
        the history of :meth:`process_chat` / :meth:`process_ttstf`: to speak a reply, call
        ``process_ttstf(chunk.message)`` on the ``finish=True`` chunk; the reply is not
        repeated in later ``process_llm`` requests.
        """
        self._ensure_open()
        return self._processor.process_llm(message, tools=tools, abort=abort)

    def process_chat(self, message: str, *, timeout: float | None = None) -> str:
        """Send ``message`` to the LLM and make the avatar speak the answer; return its text.

        Blocks until the turn is done (tool calls included). The user message and the finished
        answer go to the chat log; every text delta goes to the avatar as ``ttstf`` at once,
        emoji removed and trimmed, empty ones skipped (ANALYZING +1 each); the LLM state is on
        during the turn. On a REST-only session the answer is returned and logged but not
        spoken. The turn sends and extends the session's chat history (shared with
        :meth:`process_ttstf`, separate from the :meth:`process_llm` history).

        Raises :class:`InvalidInputError` for an empty-after-trim message (no request),
        :class:`perso_sync.errors.LLMError` when the turn fails (also given to the error
        handler), :class:`SessionClosedError` when the session is or gets closed, and
        :class:`PersoTimeoutError` after ``timeout`` seconds (the turn is then cancelled).
        If :meth:`clear_buffer` cancels the turn, returns the text received until then.
        """
        self._ensure_open()
        _check_message(message)
        timeout = check_timeout("timeout", timeout)
        try:
            return self._runtime.call(self._loop.chat_turn, message, timeout=timeout)
        except SessionClosedError:
            raise
        except PersoError as exc:
            if not isinstance(exc, PersoTimeoutError):
                self._subscribers.report_error(exc, raised=True)
            raise

    def process_ttstf(self, message: str) -> None:
        """Make the avatar speak ``message`` as is (text-to-speech-to-face).

        The text is sent as ``ttstf`` with emoji removed and trimmed (ANALYZING +1); ``message``
        itself is added, as the official client does, to the session's chat history (the one
        :meth:`process_chat` sends, not the :meth:`process_llm` one) as an assistant message,
        and to the chat log. Raises :class:`InvalidInputError` when empty after trimming,
        :class:`STFError` on a REST-only session.
        """
        text = self._speech_text(message)
        self._call_loop(self._loop.speak_reply, text, message)

    def process_custom_chat(self, message: str) -> None:
        """Deprecated: use :meth:`process_ttstf`. Speaks ``message`` with no history or chat log
        (ANALYZING / SPEAKING states only)."""
        warnings.warn(
            "process_custom_chat() is deprecated; use process_ttstf() and manage the history "
            "with get_message_history()",
            DeprecationWarning,
            stacklevel=2,
        )
        text = self._speech_text(message)
        self._call_loop(self._loop.speak, text)

    def get_message_history(self) -> list[dict[str, Any]]:
        """A copy of the LLM history of :meth:`process_llm` turns (``role`` / ``type`` /
        ``content`` entries); :meth:`process_chat` and :meth:`process_ttstf` keep their own."""
        return self._processor.get_history()

    def clear_buffer(self) -> None:
        """Stop the avatar: send ``clear-buffer``, cancel running chat turns, reset states.

        Speech not started yet never starts; speech already started stops after its current
        sentence. Every chat state goes idle. A cancelled :meth:`process_chat` returns the text
        received so far. On a REST-only session nothing is sent; turns and states still reset.
        """
        self._ensure_open()
        self._call_loop(self._loop.clear)

    def change_size(self, width: int, height: int) -> None:
        """Resize the rendered avatar (``change-size``). WebRTC sessions only."""
        self._ensure_open()
        _check_size(width, height)
        self._call_loop(self._loop.send, "change-size", {"width": width, "height": height})
        self._loop.width, self._loop.height = width, height

    def set_template(self, model: str, dress: str) -> None:
        """Switch the avatar's model and outfit (``set-template``). WebRTC sessions only."""
        self._ensure_open()
        for name, value in (("model", model), ("dress", dress)):
            check_text(name, value)
        self._call_loop(self._loop.send, "set-template", {"model": model, "dress": dress})

    def log_session_event(self, detail: str | Mapping[str, Any] | None = None) -> None:
        """Record a ``SESSION_LOG`` event (a mapping is sent as its JSON text)."""
        self._ensure_blocking_call("log_session_event")
        if isinstance(detail, str):
            check_text("detail", detail, allow_blank=True)
        self._client.log_session_event(self._session_id, detail)

    # ------------------------------------------------------------------ states and callbacks

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Block until no chat state is active (the avatar finished speaking, no turn runs).

        Returns True when idle, False after ``timeout`` seconds. Raises
        :class:`SessionClosedError` if the session is or gets closed.
        """
        from perso_sync._runtime import lend_worker_slot

        self._ensure_blocking_call("wait_until_idle")
        timeout = check_timeout("timeout", timeout)
        with lend_worker_slot():  # a tool waiting here needs no worker slot
            idle = self._loop.wait_idle(timeout)
        if idle is None:
            raise SessionClosedError(f"session {self._session_id} is closed")
        return idle

    @property
    def chat_states(self) -> frozenset[ChatState]:
        """The chat states active now (empty = idle)."""
        return self._loop.active_states()

    def get_chat_log(self) -> list[Chat]:
        """A copy of the chat log (user and AI-human messages), **newest first** as in the
        official SDK: each new entry is put at the top."""
        return self._loop.chat_log_copy()

    def subscribe_chat_states(
        self, callback: Callable[[frozenset[ChatState]], object]
    ) -> Callable[[], None]:
        """Call ``callback(active_states)`` on every change (empty set = idle).

        Returns an unsubscribe function (idempotent).
        """
        return self._subscribers.add_state_subscriber(callback, self._ensure_open)

    def subscribe_chat_log(self, callback: Callable[[list[Chat]], object]) -> Callable[[], None]:
        """Call ``callback(chat_log)`` with the whole log (a copy, newest entry first, as in
        the official SDK) whenever it grows.

        Returns an unsubscribe function (idempotent).
        """
        return self._subscribers.add_log_subscriber(callback, self._ensure_open)

    def on_close(self, callback: Callable[[bool], object]) -> Callable[[], None]:
        """Call ``callback(manual_closed)`` once when the session closes: True after
        :meth:`stop_session`, False when lost. Returns a function removing the callback."""
        return self._subscribers.add_close_callback(callback, self._ensure_open)

    def set_error_handler(self, callback: Callable[[BaseException], object]) -> Callable[[], None]:
        """Receive errors of background work (chat turns, heartbeat, raising callbacks, TTS /
        STT / STF failures; those are raised to the caller too). Replaces the previous handler;
        returns a function removing it (only if it is still the current one)."""
        self._ensure_open()
        return self._subscribers.error_handler.set(callback)

    def set_stt_result_callback(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Legacy voice chat: receive the server's ``stt`` text instead of it going to
        :meth:`process_chat`. Returns a function removing the callback."""
        self._ensure_open()
        return self._subscribers.stt_callback.set(callback)

    # ------------------------------------------------------------------ low-level channel

    def send_message(self, msg_type: str, data: Mapping[str, Any] | None = None) -> None:
        """Advanced: send ``{"type": msg_type, "data": data}`` on the ``message`` data channel,
        as the official SDK's ``session.perso.sendMessage(type, data)`` does.

        This bypasses the session's bookkeeping: chat states, the chat log and the history do
        not follow what you send (``send_message("ttstf", ...)`` speaks, but ANALYZING is not
        raised for it). Prefer the dedicated methods; use this for message types they do not
        cover. ``data`` (default ``{}``) must be a mapping with string keys that JSON can encode
        (no NaN or infinity). Raises :class:`InvalidInputError` for an empty or non-string
        ``msg_type`` or such ``data``, :class:`STFError` on a REST-only session (no channel),
        :class:`SessionClosedError` when closed.
        """
        self._ensure_open()
        _check_message_type(msg_type)
        check_text("msg_type", msg_type)
        payload = _json_object("data", {} if data is None else data)
        check_json_text("data", payload)
        self._call_loop(self._loop.send, msg_type, payload)

    def on_message(
        self, msg_type: str, callback: Callable[[dict[str, Any]], object]
    ) -> Callable[[], None]:
        """Advanced: call ``callback(data)`` for every server message of type ``msg_type`` on
        the ``message`` channel (the official SDK's ``session.perso.setMessageCallback``).

        ``data`` is the message's ``data`` object (``{}`` when it has none), a fresh copy for
        each callback. Callbacks run like the session's other callbacks: in order, off the
        runtime loop, through the session's callback dispatcher; one that raises goes to the
        error handler. The session's own handling (``stf``, ``stt``, ...) still happens; several
        callbacks may watch one type. The server's ``ping`` is the one type never delivered: the
        liveness watchdog consumes it below the session (the JS SDK would pass it on). Returns
        a function removing the callback
        (idempotent). Raises :class:`InvalidInputError` for an empty or non-string ``msg_type``
        or a callback that is not callable, :class:`STFError` on a REST-only session (no
        channel), :class:`SessionClosedError` when closed.
        """
        self._ensure_open()
        _check_message_type(msg_type)
        if not callable(callback):
            raise InvalidInputError("callback must be callable")
        self._loop.require_core("on_message")
        return self._subscribers.add_message_callback(msg_type, callback)

    # ------------------------------------------------------------------ closing

    def stop_session(self, timeout: float | None = LOOP_CALL_TIMEOUT) -> None:
        """Close the session (code 200): ``on_close`` callbacks get ``True``.

        Cancels running chat turns, stops recordings, closes the channels and the peer
        connection (a REST-only session posts ``SESSION_END`` instead). Idempotent; a call
        while another thread closes waits (up to ``timeout``) for that close to finish.
        """
        self._check_owner()
        refuse_loop_thread("Session.stop_session()")
        timeout = check_timeout("timeout", timeout)
        if not self._loop.begin_close():
            self._loop.closed_event.wait(timeout)  # another thread closes: wait for it
            return
        core = self._loop.core
        if core is not None:
            try:
                self._runtime.call(core.close, timeout=timeout)
            except PersoError as exc:  # includes the runtime stopping under us at exit
                _log.warning("closing session %s: %s", self._session_id, exc)
        # The core's on_closed hook normally did this already; a no-op then.
        self._loop.finish_close(True, *_MANUAL)
        if core is None:
            # A REST-only session has no peer connection whose end the server would notice.
            try:
                self._client.create_session_event(self._session_id, SessionEvent.SESSION_END)
            except PersoError as exc:
                _log.warning("session %s: SESSION_END not recorded: %s", self._session_id, exc)

    def _close_at_exit(self) -> None:
        """Interpreter exit (runtime hook): close within a bounded time."""
        self.stop_session(timeout=LOOP_CALL_TIMEOUT / 2)
        # The runtime stops right after this: let on_close callbacks run first.
        with contextlib.suppress(PersoError):
            self._subscribers.dispatcher.flush(_EXIT_FLUSH_TIMEOUT)

    # ------------------------------------------------------------------ TTS / STT / STF

    def process_stf(
        self,
        file: bytes | str | os.PathLike[str] | BinaryIO,
        format: str | None = None,
        message: str = "",
        progress: Callable[[int, int | None], object] | None = None,
        timeout: float = _STF_UPLOAD_TIMEOUT,
    ) -> str:
        """Make the avatar lip-sync to an audio file (speech-to-face); return the file_ref.

        ``file``: a path, bytes or a binary file object (read in 64 KiB chunks as it is sent,
        never whole; a file object is read from its current position and not closed).
        ``format``: ``wav``/``mp3`` or a MIME type; unknown or missing → the file's own type.
        ``progress(sent_bytes, total_bytes_or_None)`` is called in order, off the loop, and
        every call has run when this returns. ANALYZING goes up before the upload and back
        down if it fails. ``timeout`` bounds the whole transfer (the protocol's 30 s by default).

        Raises :class:`STFError` on a REST-only session ("processSTF requires WebRTC (STF
        mode)"), and for every failure of the speech-to-face itself, also given to the error
        handler: an empty file (``underlying_error`` an
        :class:`perso_sync.errors.AudioFormatError`), a file that cannot be read mid-way, an
        upload that times out or whose channel closes early. :class:`InvalidInputError` for a
        wrong argument (a path that cannot be opened, a text-mode file object, a non-positive
        ``timeout``); :class:`SessionClosedError` when the session is or gets closed.
        """
        from perso_sync._audio_input import open_upload_source
        from perso_sync.audio import normalize_audio_format, sniff_audio_format

        self._ensure_blocking_call("process_stf")
        check_text("message", message, allow_blank=True)
        timeout = check_seconds("timeout", timeout)
        if self._loop.core is None:
            raise STFError("processSTF requires WebRTC (STF mode)")
        try:
            with open_upload_source(file) as (reader, head, total):
                fallback = sniff_audio_format(head) if head else None
                audio_format = normalize_audio_format(format, fallback)
                progress_hook = self._progress_hook(progress)
                self._loop.apply_state(lambda machine: machine.analyzing_up())
                try:
                    file_ref = self._runtime.call(
                        self._loop.upload_stf,
                        reader,
                        total,
                        progress_hook,
                        audio_format,
                        message,
                        timeout,
                        timeout=timeout + _LOOP_CALL_MARGIN,
                    )
                except BaseException as exc:
                    self._loop.apply_state(lambda machine: machine.analyzing_down())
                    if isinstance(exc, PersoTimeoutError):  # the loop never answered in time
                        raise STFError("File transfer timed out", exc) from exc
                    raise
        except STFError as exc:
            self._subscribers.report_error(exc, raised=True)
            raise
        if progress is not None:
            with contextlib.suppress(PersoError):
                self._subscribers.dispatcher.flush(_PROGRESS_FLUSH_TIMEOUT)
        return file_ref

    def _progress_hook(
        self, progress: Callable[[int, int | None], object] | None
    ) -> Callable[[int, int | None], None] | None:
        if progress is None:
            return None
        dispatcher = self._subscribers.dispatcher

        def on_progress(sent: int, total: int | None) -> None:  # on the loop: hand it off
            dispatcher.submit(progress, sent, total)

        return on_progress

    # ------------------------------------------------------------------ the avatar's media

    # ------------------------------------------------------------------ helpers

    def _speech_text(self, message: str) -> str:
        from perso_sync._emoji import remove_emoji

        self._ensure_open()
        _check_message(message)
        text = remove_emoji(message).strip()
        if not text:
            raise InvalidInputError("message has nothing to speak once emoji are removed")
        self._loop.require_core("speech")
        return text


# ---------------------------------------------------------------------------------------------
# module helpers


def _check_message(message: object) -> None:
    check_text("message", message)


def _check_message_type(msg_type: object) -> None:
    if not isinstance(msg_type, str) or not msg_type.strip():
        raise InvalidInputError(f"msg_type must be a non-empty string, not {msg_type!r}")


def _json_object(name: str, value: object) -> dict[str, Any]:
    """``value`` as a dict that JSON can encode, else :class:`InvalidInputError` naming it."""
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InvalidInputError(f"{name} must be a mapping with string keys, not {value!r:.80}")
    payload = dict(value)
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{name} cannot be sent as JSON: {exc}") from exc
    return payload


def _check_size(width: object, height: object) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidInputError(f"{name} must be a positive integer, not {value!r}")
