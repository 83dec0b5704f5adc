"""Hostile servers and misuse at the edges of the REST client (issue 16 rows 7 REST, 8, 9, 14,
15, 16, and Ctrl-C in ``get_all_settings``).

Servers the mock cannot imitate (a status line dripped one byte at a time, a body of keep-alive
whitespace that never ends, two conflicting ``Content-Length`` headers) are a tiny raw-socket
server in the test: :class:`RawServer` answers every connection with a scripted byte sequence.
"""

from __future__ import annotations

import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from _reliability import interrupt_main_when, main_thread_blocked_in
from _wait import wait_until

import perso_sync
from mock_server import MockPersoServer
from perso_sync import _http_watch

pytestmark = pytest.mark.timeout(30)

#: Pauses between the pieces a dripping server sends: far longer in total than any timeout here.
DRIP_INTERVAL = 0.25


class RawServer:
    """A loopback TCP server that answers each connection by sending ``pieces`` in order,
    waiting ``interval`` seconds between two pieces, until the list ends, the client hangs up
    or the server is closed. ``pieces`` may be endless (an iterator)."""

    def __init__(self, pieces: Callable[[], Iterator[bytes]], interval: float = 0.0) -> None:
        self._pieces = pieces
        self._interval = interval
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.sent_complete = threading.Event()  # set when a whole script was delivered
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, name="test-raw-server", daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(
                target=self._answer, args=(conn,), name="test-raw-conn", daemon=True
            )
            worker.start()
            self._threads.append(worker)

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                for index, piece in enumerate(self._pieces()):
                    if index and self._interval and self._stop.wait(self._interval):
                        return
                    conn.sendall(piece)
                self.sent_complete.set()
            except OSError:
                return  # the client hung up: what a timeout does

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def raw_server(no_leaks: Any) -> Iterator[Callable[..., RawServer]]:
    """``raw_server(pieces, interval)``: a started :class:`RawServer`, closed after the test
    (before the leak check)."""
    made: list[RawServer] = []

    def make(pieces: Callable[[], Iterator[bytes]], interval: float = 0.0) -> RawServer:
        server = RawServer(pieces, interval)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def _one_byte_at_a_time() -> Iterator[bytes]:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        + b"X-Padding: "
        + b"." * 200
        + b"\r\n\r\n[]"
    )
    for byte in answer:
        yield bytes([byte])


def _keep_alives_forever() -> Iterator[bytes]:
    yield b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    while True:
        yield b"1\r\n \r\n"  # one byte of JSON whitespace per chunk, never the last chunk


# -- row 7: the timeout bounds the whole exchange ---------------------------------------------


def test_a_server_dripping_one_byte_at_a_time_ends_in_a_timeout(
    raw_server: Callable[..., RawServer],
) -> None:
    server = raw_server(_one_byte_at_a_time, DRIP_INTERVAL)  # ~55 s for the whole answer
    client = perso_sync.PersoClient(api_key="k" * 20, api_server=server.url, timeout=1.0)
    with client, pytest.raises(perso_sync.PersoTimeoutError) as raised:
        client.get_llms()
    assert "1.0 s" in str(raised.value)
    assert not server.sent_complete.is_set()  # the client gave up; it did not sit it out


def test_a_body_of_keep_alives_that_never_ends_is_a_timeout(
    raw_server: Callable[..., RawServer],
) -> None:
    server = raw_server(_keep_alives_forever, DRIP_INTERVAL)
    with (
        perso_sync.PersoClient(
            api_key="k" * 20, api_server=server.url, timeout=(1.0, 1.0), max_retries=2
        ) as client,
        pytest.raises(perso_sync.PersoTimeoutError) as raised,
    ):
        client.get_documents()
    assert "whole exchange" in str(raised.value)


def test_the_whole_exchange_deadline_is_settable_apart_from_the_phases(
    raw_server: Callable[..., RawServer],
) -> None:
    server = raw_server(_keep_alives_forever, DRIP_INTERVAL)
    timeout = perso_sync.HttpTimeout(connect=5.0, read=30.0, total=1.5)
    with perso_sync.PersoClient(api_key="k" * 20, api_server=server.url, timeout=timeout) as client:
        assert client.timeout.total == 1.5
        with pytest.raises(perso_sync.PersoTimeoutError) as raised:
            client.get_prompts()
    assert "1.5 s" in str(raised.value)


def test_concurrent_deadlines_all_fire_from_one_thread(
    raw_server: Callable[..., RawServer],
) -> None:
    """Twelve calls at once against a server that never finishes: each ends at its own
    deadline (a short one is not held up behind a long one), and the deadlines are kept by
    one thread of the process, not one per call (a busy WSGI app would pile them up)."""
    server = raw_server(_keep_alives_forever, DRIP_INTERVAL)
    deadlines = [1.0 + (index % 3) * 0.75 for index in range(12)]  # 1.0, 1.75, 2.5 s
    ended: dict[int, tuple[BaseException, float]] = {}
    finish_order: list[int] = []
    watchers_seen: list[int] = []
    clients = [
        perso_sync.PersoClient(
            api_key="k" * 20,
            api_server=server.url,
            timeout=perso_sync.HttpTimeout(connect=5.0, read=30.0, total=total),
        )
        for total in deadlines
    ]

    def call(index: int) -> None:
        started = time.monotonic()
        try:
            clients[index].get_documents()
        except perso_sync.PersoError as exc:
            ended[index] = (exc, time.monotonic() - started)
            finish_order.append(index)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        names = [t.name for t in threading.enumerate()]
        watchers_seen.append(names.count("perso-http-deadline"))
        threads[0].join(0.05)
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()

    assert sorted(ended) == list(range(len(clients)))
    for index, (error, elapsed) in ended.items():
        assert isinstance(error, perso_sync.PersoTimeoutError)
        assert f"{deadlines[index]} s" in str(error)
        assert elapsed >= deadlines[index]
    # Each call ended at its own deadline: every 1.0 s call before any 2.5 s one.
    ranks = [deadlines[index] for index in finish_order]
    assert max(i for i, d in enumerate(ranks) if d == 1.0) < min(
        i for i, d in enumerate(ranks) if d == 2.5
    )
    assert max(watchers_seen) == 1


def _headers_with_connection_close_then_a_dripped_body() -> Iterator[bytes]:
    # "Connection: close": urllib3 hands the socket over from the pooled connection to the
    # response as soon as the headers arrive. The body is valid JSON (an empty list padded with
    # whitespace) so that sitting it out would end in success, not in an error.
    body = b"[" + b" " * (BODY_DRIPPED_BYTES - 2) + b"]"
    yield (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    for byte in body:
        yield bytes([byte])


#: Bytes of the dripped body: at DRIP_INTERVAL apart, ~37 s for the whole of it.
BODY_DRIPPED_BYTES = 150


def test_the_deadline_holds_when_the_server_closes_after_the_answer(
    raw_server: Callable[..., RawServer],
) -> None:
    """A server that answers with "Connection: close" and drips its body: the connection gives
    its socket up to the response with the headers, and the deadline still cuts the body off
    (each read is far shorter than the read timeout, so only the deadline can end it)."""
    server = raw_server(_headers_with_connection_close_then_a_dripped_body, DRIP_INTERVAL)
    timeout = perso_sync.HttpTimeout(connect=5.0, read=10.0, total=1.0)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(client.get_prompts())
        except perso_sync.PersoError as exc:
            outcome.append(exc)

    with perso_sync.PersoClient(
        api_key="k" * 20, api_server=server.url, timeout=timeout, max_retries=0
    ) as client:
        caller = threading.Thread(target=call, name="test-deadline-caller")
        caller.start()
        caller.join(15)  # a bound on a hang only: the deadline ends the call long before
        assert not caller.is_alive(), "the call outlived its deadline (and its join)"
    assert len(outcome) == 1
    error = outcome[0]
    assert isinstance(error, perso_sync.PersoTimeoutError), error
    assert "whole exchange" in str(error)
    assert "1.0 s" in str(error)
    assert not server.sent_complete.is_set()  # the client gave up; it did not sit it out


def test_a_deadline_passing_after_the_hand_back_spares_the_next_call_on_that_connection(
    perso_mock: MockPersoServer, no_leaks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Call A's body ends and its keep-alive connection goes back to the pool; call B (another
    thread) takes it and waits for its answer on that socket. A's deadline passing before A's
    call returns must not shut the socket B is reading from. The pool's hand-back is where the
    test steps in: it starts B, waits until B's request is at the server, then until A's
    deadline has passed (the deadline thread), all before A's call returns."""
    # Two clients on one connection pool: A with a short deadline, B with a long one.
    shared = _http_watch.mount_deadline_adapters(requests.Session())
    perso_mock.faults.delay("prompts", 4.0)  # B's answer: well after A's deadline
    outcome: dict[str, object] = {}
    b_threads: list[threading.Thread] = []
    put_conn = urllib3.HTTPConnectionPool._put_conn

    def call_b() -> None:
        with perso_sync.PersoClient(
            api_key=perso_mock.api_key,
            api_server=perso_mock.url,
            timeout=perso_sync.HttpTimeout(connect=5.0, read=15.0, total=15.0),
            max_retries=0,
            session=shared,
        ) as client_b:
            try:
                outcome["b"] = client_b.get_prompts()
            except perso_sync.PersoError as exc:
                outcome["b"] = exc

    def hand_back_then_race(pool: Any, conn: Any) -> None:
        watch_a = _http_watch._watching.current  # A's thread, still inside A's exchange
        put_conn(pool, conn)
        if b_threads:
            return
        b_threads.append(threading.Thread(target=call_b, name="test-call-b"))
        b_threads[0].start()
        wait_until(lambda: perso_mock.journal.requests(endpoint="prompts"), what="B's request")
        wait_until(lambda: watch_a.expired, what="A's deadline")

    monkeypatch.setattr(urllib3.HTTPConnectionPool, "_put_conn", hand_back_then_race)
    with perso_sync.PersoClient(
        api_key=perso_mock.api_key,
        api_server=perso_mock.url,
        timeout=perso_sync.HttpTimeout(connect=5.0, read=15.0, total=2.0),
        max_retries=0,
        session=shared,
    ) as client_a:
        outcome["a"] = client_a.get_llms()
    assert b_threads, "call A never handed its connection back"
    b_threads[0].join(20)  # a bound on a hang only
    assert not b_threads[0].is_alive()
    shared.close()
    assert isinstance(outcome["a"], list)
    assert isinstance(outcome["b"], list), outcome["b"]  # not a connection cut under B


# -- row 14: a malformed answer is the server's fault ----------------------------------------


def test_conflicting_content_lengths_are_an_invalid_response(
    raw_server: Callable[..., RawServer],
) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nContent-Length: 5\r\n\r\n[]"
    )
    server = raw_server(lambda: iter([answer]))
    client = perso_sync.PersoClient(api_key="k" * 20, api_server=server.url, max_retries=0)
    with client, pytest.raises(perso_sync.InvalidResponseError) as raised:
        client.get_llms()
    assert "Content-Length" in str(raised.value)


# -- row 8: no frame of an error's traceback holds the raw key --------------------------------


def _failure(call: Callable[[], object]) -> BaseException:
    # A frame of its own without the key among its locals: the traceback starts here.
    try:
        call()
    except perso_sync.PersoError as error:
        return error
    raise AssertionError("the call did not fail")


class _Construct:
    """``PersoClient(**kwargs)`` as a callable whose frames and repr do not show the kwargs (a
    lambda's closure would put the test's own ``secret`` on the traceback)."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs

    def __call__(self) -> object:
        return perso_sync.PersoClient(**self._kwargs)

    def __repr__(self) -> str:
        return "<PersoClient(...)>"


def _rendered_with_locals(error: BaseException) -> str:
    """What ``pytest -l``, ``traceback`` with ``capture_locals`` or an error tracker print."""
    rendered = traceback.TracebackException.from_exception(error, capture_locals=True)
    return "".join(rendered.format())


def test_no_traceback_frame_holds_the_raw_key(perso_mock: MockPersoServer, no_leaks: Any) -> None:
    secret = f"sk-live-{uuid.uuid4().hex}"
    perso_mock.api_key = secret
    errors: list[BaseException] = []
    with perso_sync.PersoClient(api_key=secret, api_server=perso_mock.url, max_retries=0) as client:
        perso_mock.faults.fail("llm_types", 500)
        errors.append(_failure(client.get_llms))
        perso_mock.faults.drop("documents")
        errors.append(_failure(client.get_documents))
        perso_mock.faults.fail("create_session", 400)
        errors.append(_failure(lambda: client.create_session_id(session_template_id="nope")))
    with perso_sync.PersoClient(
        api_key=secret, api_server=perso_mock.url, timeout=(2.0, 0.3), max_retries=0
    ) as impatient:
        perso_mock.faults.delay("prompts", 5)
        errors.append(_failure(impatient.get_prompts))
    closed = socket.create_server(("127.0.0.1", 0))  # a port nothing listens on once closed
    refused_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    with perso_sync.PersoClient(
        api_key=secret, api_server=refused_url, max_retries=1, sleep=lambda _: None
    ) as refused:
        # http.client holds the whole header block (the key in plain bytes) in a local of the
        # frame that fails to connect: the cleared frames of the chained cause must not show it.
        errors.append(_failure(refused.get_llms))
    errors.append(_failure(_Construct(api_key=secret, api_server="ftp://x")))
    errors.append(_failure(_Construct(api_key=secret, timeout=-1)))

    assert [type(e).__name__ for e in errors] == [
        "ApiError",
        "PersoConnectionError",
        "SessionCreationError",
        "PersoTimeoutError",
        "PersoConnectionError",
        "InvalidInputError",
        "InvalidInputError",
    ]
    for error in errors:
        text = _rendered_with_locals(error)
        assert "self = " in text  # the locals are rendered: the check is not vacuous
        assert secret not in text, text


# -- row 15: a client that failed in __init__ -------------------------------------------------


def test_a_key_that_cannot_be_sent_is_a_clear_error_and_every_frame_can_be_shown() -> None:
    secret = "sk-live-abc…é"
    error = _failure(_Construct(api_key=secret))
    assert isinstance(error, perso_sync.InvalidInputError)
    message = str(error)
    assert "api_key" in message
    assert "non-ASCII" in message
    assert "position 11" in message  # where the first bad character is, not what it is
    assert secret not in message
    assert "…" not in message
    # A debugger, `pytest -l` or an error tracker calls repr() on every local of every frame,
    # including the half-built client's `self`.
    frame_locals = []
    tb = error.__traceback__
    while tb is not None:
        frame_locals.extend(tb.tb_frame.f_locals.values())
        tb = tb.tb_next
    assert any(isinstance(value, perso_sync.PersoClient) for value in frame_locals)
    for value in frame_locals:
        shown = repr(value)
        assert secret not in shown
    half_built = next(v for v in frame_locals if isinstance(v, perso_sync.PersoClient))
    assert "PersoClient(" in repr(half_built)


# -- row 9: recording to a path that cannot be written ----------------------------------------


def test_recording_to_a_missing_directory_fails_at_once(
    open_session: Callable[..., perso_sync.Session], tmp_path: Path
) -> None:
    session = open_session()
    with pytest.raises(perso_sync.RecordingError) as raised:
        session.record(tmp_path / "no-such-dir" / "avatar.mp4")
    assert "no-such-dir" in str(raised.value)
    # Nothing is left half-started: a recording to a good path starts right after (it would
    # raise "already recording" otherwise).
    recording = session.record(tmp_path / "avatar.wav")
    recording.stop()


# -- row 16: recording contracts with a key too short to scrub --------------------------------


def test_recording_contracts_refuses_a_key_too_short_to_scrub(
    perso_mock: MockPersoServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from perso_sync.contracts.__main__ import main

    perso_mock.api_key = "k"
    monkeypatch.setenv("PERSO_INTERACTIVE_API_KEY", "k")
    assert main(["record", "--out", str(tmp_path), "--api-server", perso_mock.url]) == 2
    err = capsys.readouterr().err
    assert "too short" in err
    assert "at least 8 characters" in err
    assert perso_mock.journal.requests() == []  # refused before any request
    assert list(tmp_path.iterdir()) == []


# -- Ctrl-C in get_all_settings ---------------------------------------------------------------


@pytest.mark.usefixtures("default_sigint")
def test_ctrl_c_during_get_all_settings_returns_at_once(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> None:
    perso_mock.faults.delay("documents", 20)  # one of the nine lists hangs
    helper, sent = interrupt_main_when(
        lambda: (
            main_thread_blocked_in("wait", "get_all_settings")
            and bool(perso_mock.journal.requests(endpoint="documents"))
        )
    )
    with pytest.raises(KeyboardInterrupt):
        client.get_all_settings()
    helper.join(5)
    assert sent.is_set()
    # The call did not wait for the hanging request: it is still being answered.
    (documents,) = perso_mock.journal.requests(endpoint="documents")
    assert documents.status is None
    assert client.get_llms()  # the client stays usable


def test_a_key_that_is_also_ordinary_text_fails_the_recording_clearly(
    perso_mock: MockPersoServer, tmp_path: Path
) -> None:
    from perso_sync.contracts._record import KeyLeakError, record

    perso_mock.api_key = "settings"  # long enough, but also a word of the API's paths
    with pytest.raises(KeyLeakError) as raised:
        record(tmp_path, api_key="settings", api_server=perso_mock.url)
    assert "longer, random key" in str(raised.value)
    assert list(tmp_path.glob("*.json")) == []  # nothing kept, nothing corrupted either
