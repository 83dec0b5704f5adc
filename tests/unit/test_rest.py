"""The requests transport: headers, error mapping, retries, timeouts, secrets.

HTTP is faked with ``responses``; connection refused and read timeout use real loopback sockets.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest
import requests
import responses

from perso_sync._rest import HttpTimeout, RestTransport, SecretStr, parse_retry_after
from perso_sync.errors import (
    ApiError,
    ClientClosedError,
    InvalidInputError,
    InvalidResponseError,
    MissingApiKeyError,
    PersoConnectionError,
    PersoTimeoutError,
)

SERVER = "https://perso.test"
KEY = "sk-live-very-secret-1234"
PATH = "/api/v1/settings/llm_type/"
URL = SERVER + PATH


class SleepRecorder:
    """Injected instead of time.sleep: records the delays, never waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def transport(sleeps: SleepRecorder) -> Iterator[RestTransport]:
    rest = RestTransport(api_server=SERVER, api_key=KEY, max_retries=2, sleep=sleeps)
    yield rest
    rest.close()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


# -- headers ------------------------------------------------------------------------------------


def test_account_call_carries_the_key(
    transport: RestTransport, mocked: responses.RequestsMock
) -> None:
    mocked.get(URL, json=[{"name": "gpt"}])
    assert transport.get(PATH, account=True) == [{"name": "gpt"}]
    assert mocked.calls[0].request.headers["PersoLive-APIKey"] == KEY


def test_session_call_never_carries_the_key(
    transport: RestTransport, mocked: responses.RequestsMock
) -> None:
    mocked.post(SERVER + "/api/v1/session/s1/tts/", json={"audio": "AAA="})
    transport.post("/api/v1/session/s1/tts/", account=False, json_body={"text": "hi"})
    request = mocked.calls[0].request
    assert "PersoLive-APIKey" not in request.headers
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == b'{"text":"hi"}'


def test_account_call_without_key_sends_nothing(mocked: responses.RequestsMock) -> None:
    rest = RestTransport(api_server=SERVER, api_key=None)
    with pytest.raises(MissingApiKeyError, match="PERSO_INTERACTIVE_API_KEY"):
        rest.get(PATH, account=True)
    assert len(mocked.calls) == 0


def test_server_url_is_trimmed(mocked: responses.RequestsMock) -> None:
    rest = RestTransport(api_server="  https://perso.test///  ", api_key=KEY)
    assert rest.api_server == SERVER
    mocked.get(URL, json=[])
    rest.get(PATH, account=True)
    assert mocked.calls[0].request.url == URL


@pytest.mark.parametrize("bad_key", ["sk live", "sk\nInjected: header", "sk-ключ", "sk\x00", 42])
def test_unsendable_api_key_is_refused_without_echoing_it(
    bad_key: object, mocked: responses.RequestsMock
) -> None:
    with pytest.raises(InvalidInputError, match="api_key") as info:
        RestTransport(api_server=SERVER, api_key=bad_key)  # type: ignore[arg-type]
    assert str(bad_key) not in str(info.value)
    assert len(mocked.calls) == 0


def test_api_key_is_trimmed_and_blank_means_none(mocked: responses.RequestsMock) -> None:
    assert not RestTransport(api_server=SERVER, api_key="   ").has_api_key
    rest = RestTransport(api_server=SERVER, api_key=f"  {KEY}\n")
    mocked.get(URL, json=[])
    rest.get(PATH, account=True)
    assert mocked.calls[0].request.headers["PersoLive-APIKey"] == KEY


@pytest.mark.parametrize("server", ["", "perso.test", "ftp://perso.test", None])
def test_bad_server_url_is_refused(server: object) -> None:
    with pytest.raises(InvalidInputError, match="api_server"):
        RestTransport(api_server=server, api_key=KEY)  # type: ignore[arg-type]


# -- answers ------------------------------------------------------------------------------------


def test_empty_2xx_body_is_none(transport: RestTransport, mocked: responses.RequestsMock) -> None:
    mocked.post(SERVER + "/api/v1/session/s/event/create/", body=b"")
    assert transport.post("/api/v1/session/s/event/create/", account=False, json_body={}) is None


def test_2xx_that_is_not_json(transport: RestTransport, mocked: responses.RequestsMock) -> None:
    mocked.get(URL, body=b"<html>maintenance</html>", status=200)
    with pytest.raises(InvalidResponseError, match="maintenance") as info:
        transport.get(PATH, account=True)
    assert info.value.status == 200


def test_api_error_from_json_body(transport: RestTransport, mocked: responses.RequestsMock) -> None:
    mocked.get(
        URL,
        status=404,
        json={
            "type": "client_error",
            "errors": [{"code": "does_not_exist", "detail": "Nope.", "attr": "prompt"}],
        },
    )
    with pytest.raises(ApiError) as info:
        transport.get(PATH, account=True)
    assert (info.value.error_code, info.value.code, info.value.attr) == (
        404,
        "does_not_exist",
        "prompt",
    )


def test_html_502_on_post(transport: RestTransport, mocked: responses.RequestsMock) -> None:
    mocked.post(SERVER + "/api/v1/session/", status=502, body=b"<html>Bad Gateway</html>")
    with pytest.raises(ApiError) as info:
        transport.post("/api/v1/session/", account=True, json_body={})
    assert info.value.code == "UNKNOWN_ERROR"
    assert "502" in info.value.detail
    assert "Bad Gateway" in info.value.detail


def test_empty_504_after_retries(
    transport: RestTransport, mocked: responses.RequestsMock, sleeps: SleepRecorder
) -> None:
    mocked.get(URL, status=504, body=b"")
    with pytest.raises(ApiError) as info:  # never tenacity.RetryError
        transport.get(PATH, account=True)
    assert info.value.error_code == 504
    assert info.value.code == "UNKNOWN_ERROR"
    assert len(mocked.calls) == 3
    assert len(sleeps.delays) == 2


def test_redirect_is_not_followed(transport: RestTransport, mocked: responses.RequestsMock) -> None:
    mocked.get(URL, status=301, headers={"Location": "https://elsewhere.test/x/"})
    with pytest.raises(ApiError, match=r"elsewhere\.test"):
        transport.get(PATH, account=True)
    assert len(mocked.calls) == 1  # the key never went to elsewhere.test


def test_body_that_cannot_be_json(transport: RestTransport, mocked: responses.RequestsMock) -> None:
    with pytest.raises(InvalidInputError, match="JSON"):
        transport.post("/api/v1/session/", account=True, json_body={"x": float("nan")})
    assert len(mocked.calls) == 0


# -- retries ------------------------------------------------------------------------------------


def test_get_503_twice_then_200(
    transport: RestTransport, mocked: responses.RequestsMock, sleeps: SleepRecorder
) -> None:
    mocked.get(URL, status=503, body=b"")
    mocked.get(URL, status=503, body=b"")
    mocked.get(URL, json=[{"name": "gpt"}])
    assert transport.get(PATH, account=True) == [{"name": "gpt"}]
    assert len(mocked.calls) == 3
    # exponential backoff with jitter: ~0.5 s then ~1 s, jitter only shortens
    assert 0.375 <= sleeps.delays[0] <= 0.5
    assert 0.75 <= sleeps.delays[1] <= 1.0


def test_retry_after_is_honoured(
    transport: RestTransport, mocked: responses.RequestsMock, sleeps: SleepRecorder
) -> None:
    mocked.get(URL, status=429, headers={"Retry-After": "7"}, json={"errors": []})
    mocked.get(URL, json=[])
    assert transport.get(PATH, account=True) == []
    assert sleeps.delays == [7.0]


def test_retry_after_longer_than_the_cap_is_not_waited(
    transport: RestTransport, mocked: responses.RequestsMock, sleeps: SleepRecorder
) -> None:
    mocked.get(URL, status=429, headers={"Retry-After": "3600"}, json={"errors": []})
    with pytest.raises(ApiError) as info:
        transport.get(PATH, account=True)
    assert info.value.error_code == 429
    assert sleeps.delays == []
    assert len(mocked.calls) == 1


def test_max_retries_zero_disables_retries(
    mocked: responses.RequestsMock, sleeps: SleepRecorder
) -> None:
    rest = RestTransport(api_server=SERVER, api_key=KEY, max_retries=0, sleep=sleeps)
    mocked.get(URL, status=503, body=b"")
    with pytest.raises(ApiError):
        rest.get(PATH, account=True)
    assert len(mocked.calls) == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("status", [500, 400, 404])
def test_other_statuses_are_not_retried(
    transport: RestTransport, mocked: responses.RequestsMock, status: int
) -> None:
    mocked.get(URL, status=status, json={"errors": []})
    with pytest.raises(ApiError):
        transport.get(PATH, account=True)
    assert len(mocked.calls) == 1


def test_post_session_is_sent_exactly_once_on_503(
    transport: RestTransport, mocked: responses.RequestsMock, sleeps: SleepRecorder
) -> None:
    mocked.post(SERVER + "/api/v1/session/", status=503, body=b"")
    mocked.post(SERVER + "/api/v1/session/", json={"session_id": "would-be-a-duplicate"})
    with pytest.raises(ApiError) as info:
        transport.post("/api/v1/session/", account=True, json_body={"prompt": "p"})
    assert info.value.error_code == 503
    assert len(mocked.calls) == 1
    assert sleeps.delays == []


def test_post_is_not_retried_on_connection_error(
    transport: RestTransport, mocked: responses.RequestsMock
) -> None:
    mocked.post(SERVER + "/api/v1/session/", body=requests.ConnectionError("reset"))
    with pytest.raises(PersoConnectionError):
        transport.post("/api/v1/session/", account=True, json_body={})
    assert len(mocked.calls) == 1


def test_get_connection_error_is_retried(
    transport: RestTransport, mocked: responses.RequestsMock
) -> None:
    mocked.get(URL, body=requests.ConnectionError("connection reset by peer"))
    mocked.get(URL, json=[])
    assert transport.get(PATH, account=True) == []
    assert len(mocked.calls) == 2


# -- transport failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "expected", "attempts"),
    [
        (requests.exceptions.ConnectTimeout("connect timed out"), PersoTimeoutError, 3),
        (requests.exceptions.ReadTimeout("read timed out"), PersoTimeoutError, 1),
        (requests.exceptions.SSLError("bad certificate"), PersoConnectionError, 3),
        (requests.exceptions.ChunkedEncodingError("cut off"), PersoConnectionError, 3),
        (requests.exceptions.InvalidURL("bad url"), InvalidInputError, 1),
        (requests.exceptions.RequestException("other"), PersoConnectionError, 1),
    ],
)
def test_transport_errors_are_mapped(
    transport: RestTransport,
    mocked: responses.RequestsMock,
    raised: Exception,
    expected: type[Exception],
    attempts: int,
) -> None:
    mocked.get(URL, body=raised)
    with pytest.raises(expected) as info:
        transport.get(PATH, account=True)
    assert info.value.__cause__ is raised
    assert len(mocked.calls) == attempts
    assert not isinstance(info.value, requests.RequestException)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_refused_on_a_closed_port(sleeps: SleepRecorder) -> None:
    rest = RestTransport(
        api_server=f"http://127.0.0.1:{_closed_port()}", api_key=KEY, max_retries=1, sleep=sleeps
    )
    with pytest.raises(PersoConnectionError) as info:
        rest.get(PATH, account=True)
    assert len(sleeps.delays) == 1  # one retry, then our error
    _assert_no_secret(info.value)


class SilentServer:
    """Accepts TCP connections and never answers (to hit the read timeout)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self._conns.append(conn)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._listener.close()


def test_read_timeout_against_a_silent_server(sleeps: SleepRecorder) -> None:
    with SilentServer() as server:
        session = requests.Session()
        session.trust_env = False  # no proxy between us and 127.0.0.1
        rest = RestTransport(
            api_server=f"http://127.0.0.1:{server.port}",
            api_key=KEY,
            timeout=HttpTimeout(connect=2.0, read=0.2),
            sleep=sleeps,
            session=session,
        )
        try:
            with pytest.raises(PersoTimeoutError, match="read timeout") as info:
                rest.get(PATH, account=True)
        finally:
            rest.close()
            session.close()
    assert server.accepted == 1  # a read timeout is not retried
    assert sleeps.delays == []
    _assert_no_secret(info.value)


# -- secrets ------------------------------------------------------------------------------------


def _assert_no_secret(error: BaseException) -> None:
    seen: BaseException | None = error
    while seen is not None:
        assert KEY not in str(seen)
        assert KEY not in repr(seen)
        assert KEY not in repr(seen.args)
        assert getattr(seen, "request", None) is None  # no headers reachable from the chain
        seen = seen.__cause__


def test_debug_log_masks_the_key(
    transport: RestTransport, mocked: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    mocked.get(URL, status=503, body=b"")
    mocked.get(URL, json=[])
    with caplog.at_level(logging.DEBUG, logger="perso_sync"):
        transport.get(PATH, account=True)
    ours = [record for record in caplog.records if record.name == "perso_sync"]
    assert any("[secure]" in record.getMessage() for record in ours)
    assert any("retrying" in record.getMessage() for record in ours)
    for record in caplog.records:
        assert KEY not in record.getMessage()


def test_errors_from_the_chain_hold_no_key(
    transport: RestTransport, mocked: responses.RequestsMock
) -> None:
    mocked.get(URL, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(PersoTimeoutError) as info:
        transport.get(PATH, account=True)
    _assert_no_secret(info.value)


# -- life cycle and configuration ---------------------------------------------------------------


def test_closed_transport_refuses_calls(mocked: responses.RequestsMock) -> None:
    rest = RestTransport(api_server=SERVER, api_key=KEY)
    rest.close()
    rest.close()  # idempotent
    with pytest.raises(ClientClosedError, match="closed"):
        rest.get(PATH, account=True)
    assert len(mocked.calls) == 0


def test_a_forked_child_gets_its_own_connection_pool(
    mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    rest = RestTransport(api_server=SERVER, api_key=KEY)
    mocked.get(URL, json=[])
    rest.get(PATH, account=True)
    parent_pool = rest._http_session()
    monkeypatch.setattr("perso_sync._rest.os.getpid", lambda: -1)  # as seen in a forked child
    rest.get(PATH, account=True)
    assert rest._http_session() is not parent_pool
    assert len(mocked.calls) == 2


def test_a_given_session_is_used_and_not_closed(mocked: responses.RequestsMock) -> None:
    session = requests.Session()
    session.headers["X-Trace"] = "t1"
    rest = RestTransport(api_server=SERVER, api_key=KEY, session=session)
    mocked.get(URL, json=[])
    rest.get(PATH, account=True)
    rest.close()
    assert mocked.calls[0].request.headers["X-Trace"] == "t1"
    mocked.get(URL, json=[])
    session.get(URL)  # still usable by its owner


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10, HttpTimeout(connect=10, read=10, total=10)),  # a number bounds everything
        ((1.5, 60.0), HttpTimeout(connect=1.5, read=60.0)),
        (HttpTimeout(read=3.0), HttpTimeout(connect=5.0, read=3.0)),
    ],
)
def test_timeout_forms(value: object, expected: HttpTimeout) -> None:
    assert HttpTimeout.of(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), None, "5", (1,), True])
def test_bad_timeouts_are_refused(value: object) -> None:
    with pytest.raises(InvalidInputError, match="timeout"):
        HttpTimeout.of(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_bad_max_retries_are_refused(value: object) -> None:
    with pytest.raises(InvalidInputError, match="max_retries"):
        RestTransport(api_server=SERVER, api_key=KEY, max_retries=value)  # type: ignore[arg-type]


def test_default_timeouts() -> None:
    assert HttpTimeout().as_requests() == (5.0, 30.0)
    assert HttpTimeout().deadline == 35.0  # the whole exchange: connect + read
    assert HttpTimeout(total=2.0).deadline == 2.0


@pytest.mark.parametrize("total", [0, -1, float("nan"), float("inf"), "5", True])
def test_bad_whole_exchange_timeouts_are_refused(total: object) -> None:
    with pytest.raises(InvalidInputError, match="timeout"):
        HttpTimeout.of(HttpTimeout(total=total))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21T07:28:00Z
    assert parse_retry_after(header, now) == expected


def test_a_secret_str_shows_a_mask_and_sends_its_characters() -> None:
    key = SecretStr(SecretStr("sk-abc-123"))  # wrapping twice keeps the characters
    assert key == "sk-abc-123"
    shown = [repr(key), str(key), f"{key}", "%s" % key, repr({"k": key}), repr([key])]  # noqa: UP031
    assert all("sk-abc" not in text for text in shown), shown
    assert key.encode("latin-1") == b"sk-abc-123"  # what http.client puts on the wire
