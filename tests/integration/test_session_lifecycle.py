"""Session lifecycle: opening (WebRTC and REST-only), liveness, closing, many sessions at once
(public API, mock server, real WebRTC)."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import threading
from collections import Counter
from typing import Any

import _session_helpers as helpers
import pytest
from _session_helpers import Recorder, wait_until

import mock_server
import perso_sync
from mock_server import LlmScript, Rule

client = helpers.client
open_session = helpers.open_session

DECODER_THREADS = ("audio-decoder", "video-decoder")  # aiortc: one per receiver, until close


def _rest_only_sid(perso_mock: Any) -> str:
    return perso_mock.create_session_id(using_stf_webrtc=False)


def test_watchdog_closes_a_session_whose_server_stops_pinging(
    perso_mock: Any, open_session: Any
) -> None:
    session = open_session(ping_timeout=1.0)
    closes = Recorder()
    session.on_close(closes)
    sid = session.session_id
    assert perso_mock.wait_for_status(sid, "IN_PROGRESS")

    perso_mock.peer(sid).stop_pings()

    closes.wait_count(1, timeout=10)
    assert closes.calls == [False]
    assert session.closed
    assert session.close_status == perso_sync.CloseStatus(False, 408, "Request Timeout")
    perso_mock.wait_for_status(sid, "TERMINATED")
    with pytest.raises(perso_sync.SessionClosedError):
        session.process_ttstf("too late")


def test_manual_stop_calls_on_close_once(perso_mock: Any, open_session: Any) -> None:
    session = open_session()
    closes = Recorder()
    removed = Recorder()
    session.on_close(closes)
    session.on_close(removed)()  # removed before closing: never called

    with session:
        pass
    session.stop_session()  # idempotent

    closes.wait_count(1)
    assert closes.calls == [True]
    assert removed.calls == []
    assert session.close_status == perso_sync.CloseStatus(False, 200, "OK")
    perso_mock.wait_for_status(session.session_id, "TERMINATED")


def test_concurrent_stops_close_once(perso_mock: Any, open_session: Any) -> None:
    session = open_session()
    closes = Recorder()
    session.on_close(closes)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: session.stop_session(), range(4)))
    assert session.closed
    closes.wait_count(1)
    assert closes.calls == [True]


CLOSED_CALLS = {
    "process_chat": lambda s: s.process_chat("hi"),
    "process_llm": lambda s: s.process_llm("hi"),
    "process_ttstf": lambda s: s.process_ttstf("hi"),
    "process_tts": lambda s: s.process_tts("hi"),
    "transcribe_audio": lambda s: s.transcribe_audio(b"RIFF"),
    "process_stf": lambda s: s.process_stf(b"RIFF...."),
    "start_process_stt": lambda s: s.start_process_stt(),
    "stop_process_stt": lambda s: s.stop_process_stt(),
    "clear_buffer": lambda s: s.clear_buffer(),
    "change_size": lambda s: s.change_size(10, 10),
    "set_template": lambda s: s.set_template("m", "d"),
    "log_session_event": lambda s: s.log_session_event("x"),
    "wait_until_idle": lambda s: s.wait_until_idle(1),
    "subscribe_chat_states": lambda s: s.subscribe_chat_states(print),
    "subscribe_chat_log": lambda s: s.subscribe_chat_log(print),
    "on_close": lambda s: s.on_close(print),
    "set_error_handler": lambda s: s.set_error_handler(print),
    "set_stt_result_callback": lambda s: s.set_stt_result_callback(print),
    "frames": lambda s: s.frames(),
    "record": lambda s: s.record("never.mp4"),
    "enter": lambda s: s.__enter__(),
}


def test_closed_session_methods_raise_session_closed_error(
    perso_mock: Any, open_session: Any
) -> None:
    session = open_session()
    session.stop_session()
    requests_before = len(perso_mock.journal.requests())

    not_refused = []
    for name, call in CLOSED_CALLS.items():
        try:
            call(session)
        except perso_sync.SessionClosedError:
            continue
        not_refused.append(name)
    assert not_refused == []

    assert len(perso_mock.journal.requests()) == requests_before  # nothing was sent
    # Pure reads stay available.
    assert session.session_id
    assert session.close_status.live is False
    assert session.get_message_history() == []
    assert session.is_stt_recording() is False
    session.stop_session()


def _events(perso_mock: Any, sid: str) -> list[str]:
    """The session events the mock's journal recorded for ``sid``, in order."""
    return [
        entry.body["event"]
        for entry in perso_mock.journal.requests(endpoint="event", session_id=sid)
    ]


def test_rest_only_session_heartbeat(perso_mock: Any, client: Any) -> None:
    sid = _rest_only_sid(perso_mock)
    closes = Recorder()
    with client.create_session(sid, width=320, height=240, heartbeat_interval=0.1) as session:
        session.on_close(closes)
        assert session.audio_track is None
        assert session.video_track is None
        wait_until(lambda: _events(perso_mock, sid).count("SESSION_DURING") >= 2, what="beats")
        assert _events(perso_mock, sid)[0] == "SESSION_START"
        assert perso_mock.peer(sid) is None  # no WebRTC at all
        with pytest.raises(perso_sync.STFError, match="requires WebRTC"):
            session.process_ttstf("no avatar here")
    closes.wait_count(1)
    assert closes.calls == [True]
    # A REST-only session tells the server it ended (there is no peer connection to close).
    assert _events(perso_mock, sid)[-1] == "SESSION_END"
    perso_mock.wait_for_status(sid, "TERMINATED")


def test_rest_only_heartbeat_failure_closes_as_lost(perso_mock: Any, client: Any) -> None:
    sid = _rest_only_sid(perso_mock)
    session = client.create_session(sid, width=320, height=240, heartbeat_interval=0.1)
    errors = Recorder()
    closes = Recorder()
    session.set_error_handler(errors)
    session.on_close(closes)

    perso_mock.faults.fail("event", 500, times=None, session_id=sid)

    closes.wait_count(1)
    assert closes.calls == [False]
    assert isinstance(errors.calls[0], perso_sync.ApiError)
    assert errors.calls[0].error_code == 500
    assert session.close_status == perso_sync.CloseStatus(False, 408, "Request Timeout")


def test_an_exchange_answered_after_the_ready_timeout_still_opens_the_session(
    perso_mock: Any, client: Any
) -> None:
    """The ready timeout counts from the applied answer, as the official client's does: a
    platform that takes longer than it to answer the exchange still gives a session."""
    sid = perso_mock.create_session_id()
    perso_mock.faults.delay("exchange", 1.0)
    with client.create_session(sid, width=160, height=120, connect_timeout=0.5) as session:
        assert session.audio_track is not None
        wait_until(lambda: perso_mock.sessions[sid].status == "IN_PROGRESS", what="in progress")
    assert perso_mock.faults.fired[0][0] == "exchange"  # the delay did apply


def test_an_exchange_that_never_answers_ends_at_the_http_timeout(perso_mock: Any) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.delay("exchange", 30)
    threads_before = threading.active_count()

    with (
        perso_sync.PersoClient(
            api_key=perso_mock.api_key, api_server=perso_mock.url, timeout=(5.0, 0.5)
        ) as client,
        pytest.raises(perso_sync.PersoTimeoutError, match="read timeout") as raised,
    ):
        client.create_session(sid, width=160, height=120, connect_timeout=5.0)
    assert not isinstance(raised.value, perso_sync.Timeout)  # the HTTP timeout, not ready's

    # Nothing of the half-open session lingers (no decoder threads, no peer connection).
    wait_until(lambda: threading.active_count() <= threads_before + 1, what="threads")


def test_session_info_and_ice_servers_are_fetched_together(perso_mock: Any, client: Any) -> None:
    """Both GETs are in flight at once: each waits 0.3 s at the mock, and the ICE-servers GET
    reaches the mock before the session info's answer was sent."""
    sid = perso_mock.create_session_id()
    perso_mock.faults.add("session_info", delay=0.3)
    perso_mock.faults.add("ice_servers", delay=0.3)
    with client.create_session(sid, width=160, height=120) as session:
        assert session.uses_webrtc
    info, ice, exchange = (
        perso_mock.journal.requests(endpoint=name, session_id=sid)[0]
        for name in ("session_info", "ice_servers", "exchange")
    )
    assert ice.time < info.time + 0.3  # sent before the info answered
    assert exchange.time >= max(info.time, ice.time)


def test_ice_servers_failing_while_the_info_fails_too_reports_the_info(
    perso_mock: Any, client: Any
) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.fail("ice_servers", 400)  # fails first (a 4xx is not retried)
    perso_mock.faults.add("session_info", status=403, delay=0.2)
    with pytest.raises(perso_sync.ApiError) as raised:
        client.create_session(sid, width=160, height=120)
    assert raised.value.error_code == 403
    assert perso_mock.journal.requests(endpoint="exchange") == []
    assert perso_mock.peer(sid) is None


def test_a_failing_session_info_stops_everything_even_with_ice_servers_in_flight(
    perso_mock: Any, client: Any
) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.fail("session_info", 500, times=None)  # GETs retry 5xx: fail them all
    perso_mock.faults.add("ice_servers", delay=0.5)
    threads_before = threading.active_count()
    with pytest.raises(perso_sync.ApiError) as raised:
        client.create_session(sid, width=160, height=120)
    assert raised.value.error_code == 500
    assert perso_mock.journal.requests(endpoint="exchange") == []
    assert perso_mock.peer(sid) is None
    wait_until(lambda: threading.active_count() <= threads_before + 1, what="threads")


def test_a_rest_only_session_sends_no_offer(perso_mock: Any, client: Any) -> None:
    """The ICE servers (fetched with the info) come first, so the offer is made; the info then
    says REST-only and the offer is never sent."""
    sid = _rest_only_sid(perso_mock)
    perso_mock.faults.add("session_info", delay=0.3)
    with client.create_session(sid, width=160, height=120) as session:
        assert not session.uses_webrtc
    assert perso_mock.journal.requests(endpoint="exchange") == []
    assert perso_mock.peer(sid) is None
    assert _events(perso_mock, sid)[0] == "SESSION_START"


def test_exchange_error_is_an_api_error(perso_mock: Any, client: Any) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.fail("exchange", 400)

    with pytest.raises(perso_sync.ApiError) as raised:
        client.create_session(sid, width=160, height=120)

    assert raised.value.error_code == 400


def test_session_info_error_is_an_api_error(perso_mock: Any, client: Any) -> None:
    with pytest.raises(perso_sync.ApiError) as raised:
        client.create_session("no-such-session", width=160, height=120)
    assert raised.value.error_code == 404


def _thread_kind(name: str) -> str:
    if name in DECODER_THREADS:
        return name
    # The mock runs in this process: its loop's fixed executor is the server's, not ours.
    return "mock-io" if name.startswith(mock_server.IO_THREAD_PREFIX) else "other"


def _thread_names() -> Counter[str]:
    return Counter(_thread_kind(t.name) for t in threading.enumerate())


@pytest.mark.slow
def test_fifty_sessions_at_once(perso_mock: Any, client: Any) -> None:
    """50 sessions in one process, opened from 8 threads: our threads do not grow with the
    number of sessions (only aiortc's two decoder threads per connection do, until close) and
    every session keeps pinging and being pinged."""
    count = 50
    sids = [perso_mock.create_session_id() for _ in range(count)]
    for sid in sids:
        # Small and slow video: the mock encodes every stream in this same process.
        perso_mock.sessions[sid].peer_config.fps = 1
    closes = Recorder()
    sessions: list[Any] = []

    def open_one(sid: str) -> Any:
        # A generous ready timeout: 50 handshakes share one GIL with the mock's encoders.
        session = client.create_session(sid, width=64, height=48, connect_timeout=30)
        session.on_close(closes)
        return session

    def open_many(batch: list[str]) -> None:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            sessions.extend(pool.map(open_one, batch))

    try:
        open_many(sids[:10])
        with_ten = _thread_names()
        open_many(sids[10:])
        with_fifty = _thread_names()

        assert with_fifty["other"] <= with_ten["other"] + 3  # nothing per session of ours
        assert with_fifty["mock-io"] <= mock_server.IO_THREADS
        assert with_fifty["audio-decoder"] == count
        pings_before = {sid: _client_pings(perso_mock, sid) for sid in sids}
        wait_until(
            lambda: all(_client_pings(perso_mock, sid) >= pings_before[sid] + 2 for sid in sids),
            timeout=15,
            what="two more pings from every session",
        )
        assert closes.calls == []
        assert all(not s.closed for s in sessions)
        assert all(perso_mock.sessions[sid].status == "IN_PROGRESS" for sid in sids)
    finally:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda s: s.stop_session(), sessions))
    closes.wait_count(count)
    assert closes.calls == [True] * count
    wait_until(lambda: _thread_names()["audio-decoder"] == 0, timeout=15, what="decoders gone")


def _client_pings(perso_mock: Any, sid: str) -> int:
    return len(
        perso_mock.journal.messages(session_id=sid, channel="message", direction="in", type="ping")
    )


def test_interpreter_exit_closes_an_open_session(perso_mock: Any) -> None:
    """A script that forgets stop_session() still exits, and the server sees the session end."""
    sid = perso_mock.create_session_id()
    script = (
        "import perso_sync\n"
        f"client = perso_sync.PersoClient(api_key='k', api_server={perso_mock.url!r})\n"
        f"session = client.create_session({sid!r}, width=160, height=120)\n"
        "session.on_close(lambda manual: print('closed', manual, flush=True))\n"
        "print('open', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["open", "closed", "True"]
    perso_mock.wait_for_status(sid, "TERMINATED")


def test_stop_during_a_chat_turn_raises_session_closed_in_the_chat_thread(
    perso_mock: Any, open_session: Any
) -> None:
    sid = perso_mock.create_session_id()
    words = " ".join(f"word{i}" for i in range(30))
    perso_mock.set_llm_script(sid, LlmScript(rules=[Rule(pattern="hi", reply=words)], delay=0.2))
    session = open_session(sid)
    outcome: list[BaseException] = []

    def chat() -> None:
        try:
            session.process_chat("hi there")
        except perso_sync.PersoError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=chat)
    worker.start()
    perso_mock.journal.wait_for(session_id=sid, channel="message", direction="in", type="ttstf")
    session.stop_session()
    worker.join(10)

    assert not worker.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], perso_sync.SessionClosedError)
