"""REST calls against a misbehaving server: each ends in the documented exception, at once, with
no leaked thread or descriptor (the ``no_leaks`` fixture checks every test)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _reliability import open_fds
from _wait import wait_until

import perso_sync
from mock_server import MockPersoServer

pytestmark = pytest.mark.timeout(20)


def _requests_to(server: MockPersoServer, endpoint: str) -> int:
    return len(server.journal.requests(endpoint=endpoint))


@pytest.fixture
def retrying_client(perso_mock: MockPersoServer, no_leaks: Any) -> Iterator[Any]:
    """A client with two retries whose back-off sleeps are recorded instead of slept."""
    slept: list[float] = []
    with perso_sync.PersoClient(
        api_key=perso_mock.api_key, api_server=perso_mock.url, max_retries=2, sleep=slept.append
    ) as made:
        made.slept = slept  # type: ignore[attr-defined]
        yield made


def test_5xx_with_the_platform_error_body_is_an_api_error(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> None:
    perso_mock.faults.fail("llm_types", 500)
    with pytest.raises(perso_sync.ApiError) as raised:
        client.get_llms()
    assert raised.value.error_code == 500
    assert raised.value.code != "UNKNOWN_ERROR"  # the server's own code, taken from the body
    assert client.get_llms()  # the fault fired once; the client is still usable


def test_5xx_on_create_session_id_is_a_session_creation_error(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> None:
    perso_mock.faults.fail("create_session", 503)
    params = perso_sync.SessionParams(
        using_stf_webrtc=True,
        model_style=perso_mock.catalog.model_styles[0]["name"],
        prompt=perso_mock.catalog.prompts[0]["prompt_id"],
        llm_type=perso_mock.catalog.organization["llm_types"][0],
        tts_type=perso_mock.catalog.organization["tts_types"][0],
        stt_type=perso_mock.catalog.organization["stt_types"][0],
    )
    with pytest.raises(perso_sync.SessionCreationError) as raised:
        client.create_session_id(params=params)
    assert raised.value.error_code == 503
    assert _requests_to(perso_mock, "create_session") == 1  # a POST is never retried


def test_429_on_a_get_is_retried_after_retry_after_and_succeeds(
    perso_mock: MockPersoServer, retrying_client: Any
) -> None:
    perso_mock.faults.rate_limit("prompts", retry_after=2)

    prompts = retrying_client.get_prompts()

    assert [p.prompt_id for p in prompts] == [p["prompt_id"] for p in perso_mock.catalog.prompts]
    assert retrying_client.slept == [2.0]  # the server's Retry-After, not our back-off
    assert [e.status for e in perso_mock.journal.requests(endpoint="prompts")] == [429, 200]


def test_429_on_a_post_is_not_retried(perso_mock: MockPersoServer, retrying_client: Any) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.rate_limit("tts", retry_after=0)

    with pytest.raises(perso_sync.ApiError) as raised:
        retrying_client.make_tts(sid, "Hello.")

    assert raised.value.error_code == 429
    assert retrying_client.slept == []
    assert _requests_to(perso_mock, "tts") == 1


def test_503_on_a_get_is_retried_with_backoff(
    perso_mock: MockPersoServer, retrying_client: Any
) -> None:
    perso_mock.faults.fail("documents", 503, times=2)
    assert retrying_client.get_documents() is not None
    assert len(retrying_client.slept) == 2
    assert 0 < retrying_client.slept[0] < retrying_client.slept[1]  # exponential back-off


def test_retries_run_out_into_the_last_api_error(
    perso_mock: MockPersoServer, retrying_client: Any
) -> None:
    perso_mock.faults.fail("documents", 502, times=None)
    with pytest.raises(perso_sync.ApiError) as raised:
        retrying_client.get_documents()
    assert raised.value.error_code == 502
    assert _requests_to(perso_mock, "documents") == 3  # 1 + max_retries, then stop


def test_html_error_page_is_an_api_error_with_an_excerpt(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> None:
    perso_mock.faults.html("background_images", 502)
    with pytest.raises(perso_sync.ApiError) as raised:
        client.get_background_images()
    assert raised.value.error_code == 502
    assert raised.value.code == "UNKNOWN_ERROR"
    assert "Bad Gateway" in raised.value.detail
    assert "text/html" in raised.value.detail


def test_empty_error_body_is_an_api_error(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> None:
    perso_mock.faults.empty("model_styles", 504)
    with pytest.raises(perso_sync.ApiError) as raised:
        client.get_model_styles()
    assert raised.value.error_code == 504
    assert raised.value.code == "UNKNOWN_ERROR"
    assert "empty body" in raised.value.detail


def test_connection_dropped_mid_response_is_a_connection_error(
    perso_mock: MockPersoServer, client: perso_sync.PersoClient
) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.drop("session_info")
    with pytest.raises(perso_sync.PersoConnectionError):
        client.get_session_info(sid)
    assert client.get_session_info(sid).session_id == sid  # the pool recovered


def test_connection_dropped_mid_response_on_a_get_is_retried(
    perso_mock: MockPersoServer, retrying_client: Any
) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.drop("session_info")
    assert retrying_client.get_session_info(sid).session_id == sid
    assert len(retrying_client.slept) == 1


def test_connection_dropped_on_a_post_is_not_retried(
    perso_mock: MockPersoServer, retrying_client: Any
) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.drop("tts")
    with pytest.raises(perso_sync.PersoConnectionError):
        retrying_client.make_tts(sid, "Hello.")
    assert _requests_to(perso_mock, "tts") == 1


def test_a_server_that_never_answers_is_a_timeout(
    perso_mock: MockPersoServer, no_leaks: Any
) -> None:
    sid = perso_mock.create_session_id()
    perso_mock.faults.delay("session_info", 30)
    client = perso_sync.PersoClient(api_server=perso_mock.url, timeout=(2.0, 0.3))
    with client, pytest.raises(perso_sync.PersoTimeoutError):
        client.get_session_info(sid)


def test_closing_the_client_releases_its_socket_while_an_error_is_held(
    perso_mock: MockPersoServer, no_leaks: Any
) -> None:
    client = perso_sync.PersoClient(
        api_key=perso_mock.api_key, api_server=perso_mock.url, max_retries=0
    )
    fds_before = len(open_fds())
    perso_mock.faults.fail("llm_types", 500)
    with pytest.raises(perso_sync.ApiError) as raised:
        client.get_llms()
    held = raised.value  # e.g. kept by an error report, or by a logging handler's record

    client.close()

    wait_until(lambda: len(open_fds()) <= fds_before, timeout=1.0, what="the client's socket")
    assert held.error_code == 500
