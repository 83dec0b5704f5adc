"""The API key never shows: not in a log record (DEBUG everywhere), a repr, an exception (its
text, repr, args, traceback and chained causes), the mock's journal, or a contract file."""

from __future__ import annotations

import json
import logging
import pathlib
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import perso_sync
from mock_server import MockPersoServer
from mock_server.pytest_plugin import DEFAULT_TEST_API_KEY

pytestmark = pytest.mark.timeout(30)

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def secret(perso_mock: MockPersoServer) -> Iterator[str]:
    """A key no test data contains by chance; the mock accepts it (``reset()`` restores)."""
    key = f"sk-live-{uuid.uuid4().hex}"
    perso_mock.api_key = key
    return key


def _exception_texts(error: BaseException) -> Iterator[str]:
    """Everything a user, a log handler or an error tracker could print about ``error``."""
    yield "".join(traceback.format_exception(error))
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(current.args)
        yield repr(vars(current))
        current = current.__cause__ or current.__context__


def _log_texts(records: list[logging.LogRecord]) -> Iterator[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in records:
        yield formatter.format(record)  # message, args and any exc_info traceback
        yield repr(record.args)


def test_the_key_appears_nowhere(
    perso_mock: MockPersoServer,
    no_leaks: Any,
    secret: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: pathlib.Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records
    caplog.set_level(logging.DEBUG, logger="perso_sync")
    caplog.set_level(logging.DEBUG, logger="mock_server")
    errors: list[BaseException] = []
    reprs: list[str] = []

    def expect_error(call: Callable[[], object]) -> None:
        try:
            call()
        except perso_sync.PersoError as exc:
            errors.append(exc)
        else:
            pytest.fail(f"{call} did not fail")

    with perso_sync.PersoClient(api_key=secret, api_server=perso_mock.url) as client:
        reprs.append(repr(client))
        assert client.get_all_settings().llms
        sid = client.create_session_id(
            params=perso_sync.SessionParams(
                using_stf_webrtc=True,
                model_style=perso_mock.catalog.model_styles_for("webrtc")[0]["name"],
                prompt=perso_mock.catalog.prompts[0]["prompt_id"],
            )
        )
        # Failures of every kind, on account-scoped calls (the ones that carry the key).
        perso_mock.faults.fail("llm_types", 500)
        expect_error(client.get_llms)
        perso_mock.faults.html("prompts", 502, times=3)
        expect_error(client.get_prompts)
        perso_mock.faults.drop("documents", times=3)
        expect_error(client.get_documents)
        perso_mock.faults.fail("create_session", 400)
        expect_error(lambda: client.create_session_id(session_template_id="no-such-template"))
        with perso_sync.PersoClient(
            api_key=secret, api_server=perso_mock.url, timeout=(2.0, 0.2), max_retries=0
        ) as impatient:
            perso_mock.faults.delay("stt_types", 5)
            expect_error(impatient.get_stts)
        with perso_sync.PersoClient(api_key=secret + "-revoked", api_server=perso_mock.url) as bad:
            reprs.append(repr(bad))
            expect_error(bad.get_llms)  # 401: the server refused this key

        with client.create_session(sid, width=64, height=48, receive_video=False) as session:
            reprs.append(repr(session))
            assert session.process_chat("hello")
            perso_mock.faults.sse_garbage()
            expect_error(lambda: session.process_chat("hello"))
            perso_mock.faults.fail("tts", 500)
            expect_error(lambda: session.process_tts("hello"))
        reprs.append(repr(session))

    for error in errors:
        for text in _exception_texts(error):
            assert secret not in text, f"{type(error).__name__}: {text}"
    for text in reprs:
        assert secret not in text
    assert caplog.records, "DEBUG logging produced nothing: the check would prove nothing"
    for text in _log_texts(caplog.records):
        assert secret not in text
    journal = json.dumps(perso_mock.journal.to_list(), default=str)
    assert "sk-live-" not in journal  # not even the revoked variant

    # Contracts recorded with this key, and the ones in the repository.
    from perso_sync.contracts._record import record

    written = record(tmp_path, api_key=secret, api_server=perso_mock.url)
    assert written
    for path in [*written, *sorted((REPO / "contracts").rglob("*"))]:
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            assert secret not in text, path
            assert DEFAULT_TEST_API_KEY not in text, path  # the key every test run uses
