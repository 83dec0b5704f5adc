"""A mock Perso Interactive platform on loopback: REST, the LLM SSE stream and WebRTC.

Three ways to run it:

- ``python -m mock_server [--host 127.0.0.1] [--port 0] [--catalog FILE] [--api-key KEY]``
  (prints one line with its URL and the accepted key; ``make mock`` runs it);
- ``with MockPersoServer() as server: ...`` (its own daemon thread and asyncio loop);
- the pytest fixture ``perso_mock`` (see :mod:`mock_server.pytest_plugin`).

Control API (for tests; everything is thread-safe and usable while the server runs)
===================================================================================

``server.url``  ``"http://127.0.0.1:<port>"``; ``server.api_key`` (settable; ``reset()``
restores the one given at construction).

``server.catalog``: a :class:`~mock_server.catalog.Catalog`, plain mutable data. Lists per kind
(``llm_types``, ``tts_types``, ``stt_types``, ``model_styles``, ``prompts``, ``documents``,
``background_images``, ``mcp_servers``, ``text_normalizations``, ``session_templates``) and dicts
``organization`` (``llm_types``/``tts_types``/``stt_types`` assigned, ``features``,
``max_active_sessions``), ``settings`` (``ice_servers``, ``session_expiry_sec``, ``llm_delay``,
``llm_framing``, ``stt_default_text``, ``strict_capabilities``, ``tts_max_chars``),
``text_normalization_files``
(config id → CSV text), ``mcp_tools`` (MCP server id → {tool name: result}). Edit it in place::

    org = server.catalog.organization
    org["llm_types"].remove("gpt-4.1")            # → not_in_organization
    org["features"].remove("mcp")                 # → invalid "MCP server feature not found."
    org["max_active_sessions"] = 0                # → MAX_ACTIVE_SESSION_QUOTA_EXCEEDED
    server.catalog.settings["llm_framing"] = "sse"  # standard SSE framing (default "platform")
    server.catalog.settings["ice_servers"] = [{"urls": "stun:stun.example.org"}]

``server.faults``: :class:`~mock_server.faults.FaultRegistry` — ``fail(endpoint, status,
body=..)``, ``html(endpoint, status)``, ``empty(endpoint, status)``, ``rate_limit(endpoint,
retry_after)``, ``delay(endpoint, seconds)``, ``drop(endpoint)``, ``sse_truncate()``,
``sse_garbage(line)``, ``sse_split()``, and ``add(endpoint, status=, body=, headers=,
retry_after=, delay=, drop=, sse=, times=1, session_id=)``. ``times=None`` = until cleared.
Endpoint names are listed in :mod:`mock_server.faults`.

``server.journal``: :class:`~mock_server.journal.Journal` — ``requests(**match)``,
``messages(**match)`` (data channel), ``entries(predicate, **match)``, ``last(...)``,
``wait_for(predicate=None, timeout=5, **match)``, ``clear()``. Match on any entry field:
``endpoint``, ``method``, ``path``, ``session_id``, ``status``, ``channel``, ``direction``,
``type``. Header values of ``PersoLive-APIKey`` (and any occurrence of the key) read ``***``.
``status`` is ``None`` while a response is being written and ``499`` for an LLM stream the
client closed early. Bounded: a body or payload longer than ``journal.max_entry_bytes`` (64 KiB)
is kept truncated (``{"truncated": True, "size", "head"}``), and beyond ``max_entries``
(100 000) or ``max_total_bytes`` (64 MiB) the oldest entries are dropped.

Limits the mock enforces on clients: a JSON body nested deeper than 100 levels → 400
``parse_error``; a TTS text longer than ``settings["tts_max_chars"]`` → 400 ``max_length``.

``server.sessions``: session id → :class:`~mock_server.state.MockSession` (``status``,
``termination_reason``, ``capability``, ``params``, ``events`` / ``event_names``,
``llm_requests``, ``llm_script``, ``ice_servers``, ``stt_text``, ``peer_config``,
``terminate(reason)``). ``server.sessions.active()``.

``server.llm_script``: the :class:`~mock_server.llm_script.LlmScript` of sessions without their
own; ``server.set_llm_script(session_id, script)`` sets one session's. A script is a list of
``Rule(pattern, reply=, tool_calls=[ToolCall(name, arguments)], follow_up=, fail=, events=,
done=True, times=None)`` plus ``default_reply``, ``follow_up``, ``delay``, ``framing``,
``words_per_delta`` (semantics in :mod:`mock_server.llm_script`)::

    server.set_llm_script(sid, LlmScript(rules=[
        Rule(pattern="weather", tool_calls=[ToolCall(name="get_weather",
             arguments={"location": "Seoul"})], follow_up="Sunny: {results}"),
        Rule(pattern="boom", fail="upstream timeout"),
    ], delay=0))

``server.create_session_id(**params)``: a session without HTTP (defaults: a WebRTC session with
the first webrtc model style, the first prompt and the organization's first LLM/TTS/STT types);
raises :class:`~mock_server.validation.SessionParamsError` like the endpoint would.

``server.wait_for_status(session_id, status, timeout=5)``, ``server.peer(session_id)`` (the
WebRTC answerer's peer or None), ``server.call(fn, *args, timeout=5)`` (run a function or
coroutine function on the server loop, e.g. to drive a peer), ``server.reset()``.

Data-channel faults (WebRTC side, per session): ``server.stop_pings(sid)``,
``server.close_message_channel(sid)``, and any ``PeerConfig`` knob through
``server.sessions[sid].peer_config`` (e.g. ``stall_file_channel = True``, ``stt_error_code``,
``ping_interval``, ``max_file_size``), set before or after the exchange (read live).

The same control API over HTTP, under ``/_mock/``, is documented in :mod:`mock_server.control`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from mock_server.catalog import Catalog
from mock_server.faults import FaultRegistry
from mock_server.journal import Journal
from mock_server.llm_script import LlmScript, Rule, ToolCall
from mock_server.state import MockSession, SessionStore

__all__ = [
    "Catalog",
    "FaultRegistry",
    "Journal",
    "LlmScript",
    "MockPersoServer",
    "MockSession",
    "Rule",
    "SessionStore",
    "ToolCall",
]

log = logging.getLogger("mock_server")

START_TIMEOUT = 30.0  # an upper bound only: imports are slow on loaded CI machines
STOP_TIMEOUT = 5.0
#: Worker threads of the mock loop's default executor (aioice resolves addresses there). A fixed,
#: named pool: a process that embeds the mock can tell the server's threads from its own.
IO_THREADS = 4
IO_THREAD_PREFIX = "perso-mock-io"


def _allow_loopback_candidates() -> None:
    # On a loopback-only host aioice gathers no candidate at all; the fallback must be in place
    # before any client in this process makes its offer, i.e. before the first exchange.
    try:
        from mock_server._loopback import ensure_loopback_candidates
    except ImportError:  # the WebRTC side (aiortc) is optional for the HTTP mock
        return
    ensure_loopback_candidates()


def _make_catalog(catalog: Catalog | dict[str, Any] | str | os.PathLike[str] | None) -> Catalog:
    if catalog is None:
        return Catalog()
    if isinstance(catalog, Catalog):
        return catalog.copy()
    if isinstance(catalog, dict):
        return Catalog(catalog)
    return Catalog.load(catalog)


class MockPersoServer:
    """The mock platform on its own daemon thread and asyncio loop (see the module docstring).

    ``catalog`` may be a :class:`Catalog`, a dict in the catalog-file shape, a path to such a
    JSON file, or None for the seeded data. ``port=0`` picks a free port.
    """

    def __init__(
        self,
        api_key: str = "test-key",
        host: str = "127.0.0.1",
        port: int = 0,
        catalog: Catalog | dict[str, Any] | str | os.PathLike[str] | None = None,
    ) -> None:
        from mock_server.context import MockContext

        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._ctx = MockContext(
            api_key=api_key,
            catalog=_make_catalog(catalog),
            journal=Journal(secrets=lambda: [self._ctx.api_key, self._ctx.seed_api_key or ""]),
        )

    # -- state ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``; RuntimeError while the server is not running."""
        if self._port is None:
            raise RuntimeError("the mock server is not running (call start() or use `with`)")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def port(self) -> int | None:
        """The bound port, or None while the server is not running."""
        return self._port

    @property
    def api_key(self) -> str:
        """The API key the server accepts (settable; ``reset()`` restores the first one)."""
        return self._ctx.api_key

    @api_key.setter
    def api_key(self, value: str) -> None:
        self._ctx.api_key = value

    @property
    def catalog(self) -> Catalog:
        """The seeded data the REST endpoints serve; edit it in place."""
        return self._ctx.catalog

    @property
    def journal(self) -> Journal:
        """Every request and data-channel message, API key redacted."""
        return self._ctx.journal

    @property
    def faults(self) -> FaultRegistry:
        """Faults to inject into the HTTP endpoints."""
        return self._ctx.faults

    @property
    def sessions(self) -> SessionStore:
        """Session id → :class:`MockSession`."""
        return self._ctx.sessions

    @property
    def llm_script(self) -> LlmScript:
        """The scripted assistant of sessions without their own (settable)."""
        return self._ctx.llm_script

    @llm_script.setter
    def llm_script(self, script: LlmScript) -> None:
        self._ctx.llm_script = script

    @property
    def context(self) -> Any:
        """The :class:`~mock_server.context.MockContext` the routes share."""
        return self._ctx

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "stopped"
        return f"<MockPersoServer {where} sessions={len(self.sessions)}>"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> MockPersoServer:
        """Start serving (idempotent); returns once the port is bound."""
        if self._thread is not None and self._thread.is_alive():
            return self
        _allow_loopback_candidates()
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failure), name="perso-mock-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError(f"the mock server did not start within {START_TIMEOUT}s")
        if failure:
            self._thread.join(STOP_TIMEOUT)
            self._thread = None
            raise RuntimeError(f"the mock server could not start: {failure[0]}") from failure[0]
        return self

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(IO_THREADS, thread_name_prefix=IO_THREAD_PREFIX)
        )
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it
            failure.append(exc)
        finally:
            ready.set()
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=1))
                loop.run_until_complete(loop.shutdown_asyncgens())
            self._loop = None
            self._port = None
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        from aiohttp import web

        from mock_server.app import build_app

        self._stop_event = asyncio.Event()
        runner = web.AppRunner(build_app(self._ctx), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
            addresses = runner.addresses
            self._port = int(addresses[0][1])
            ready.set()
            await self._stop_event.wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner.cleanup(), timeout=STOP_TIMEOUT)
            # The answerer's peers lived on this loop; a restart makes a new one.
            self._ctx.answerer = None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop serving: peers closed, connections dropped; bounded by ``timeout`` seconds."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        self._thread = None
        if thread is None:
            return
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("mock server thread did not stop within %ss (left as daemon)", timeout)

    def __enter__(self) -> MockPersoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers for tests -----------------------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 5.0) -> Any:
        """Run ``fn(*args)`` on the server loop (awaited when it is a coroutine function) and
        return its result; TimeoutError after ``timeout`` seconds."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the mock server is not running")

        async def run() -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def reset(self, timeout: float = 10.0) -> None:
        """Back to the seeded state: peers closed, sessions, faults, journal, scripts cleared,
        catalog and API key restored."""
        if self._loop is None:
            # Not running: nothing to close on a loop.
            asyncio.run(self._ctx.reset())
            return
        self.call(self._ctx.reset, timeout=timeout)

    def create_session_id(self, **params: Any) -> str:
        """A new session id without HTTP; params as for ``POST /api/v1/session/``.

        Missing required params get defaults (``using_stf_webrtc=True``, the first webrtc model
        style, the first prompt) and, unless given, the organization's first LLM/TTS/STT types.
        Raises :class:`~mock_server.validation.SessionParamsError` like the endpoint would.
        """
        from mock_server.routes_session import new_session

        catalog = self.catalog
        org = catalog.organization
        body = dict(params)
        body.setdefault("using_stf_webrtc", True)
        if "model_style" not in body:
            styles = catalog.model_styles_for("webrtc") or catalog.model_styles
            body["model_style"] = styles[0]["name"] if styles else None
        if "prompt" not in body and catalog.prompts:
            body["prompt"] = catalog.prompts[0].get("prompt_id")
        for key in ("llm_type", "tts_type", "stt_type"):
            assigned = org.get(f"{key}s") or []
            if key not in body and assigned:
                body[key] = assigned[0]
        body = {k: v for k, v in body.items() if v is not None or k.endswith("_locale")}
        return new_session(self._ctx, body).session_id

    def set_llm_script(self, session_id: str, script: LlmScript | None) -> None:
        """Give one session its own scripted assistant (None: back to ``server.llm_script``)."""
        self.sessions[session_id].llm_script = script

    def peer(self, session_id: str) -> Any:
        """The WebRTC answerer's peer of a session, or None (no exchange yet)."""
        answerer = self._ctx.answerer
        return None if answerer is None else answerer.peer(session_id)

    def stop_pings(self, session_id: str) -> None:
        """Fault: stop the server pings of a session (now, or from its exchange on)."""
        self.sessions[session_id].peer_config.pings_enabled = False

    def close_message_channel(self, session_id: str, timeout: float = 5.0) -> None:
        """Fault: close the session's ``message`` channel from the server side (the peer
        connection stays up). RuntimeError when the session has no peer yet."""
        peer = self.peer(session_id)
        if peer is None:
            raise RuntimeError(f"session {session_id} has no WebRTC peer (no exchange yet)")
        self.call(peer.close_message_channel, timeout=timeout)

    def wait_for_status(self, session_id: str, status: str, timeout: float = 5.0) -> MockSession:
        """Block until the session has ``status`` (e.g. ``"IN_PROGRESS"``); TimeoutError."""
        return self.sessions.wait_for_status(session_id, status, timeout)
