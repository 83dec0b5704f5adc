"""Pure request checks of the mock (``mock_server.validation``) under hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3 import encode_multipart_formdata

from mock_server.validation import parse_multipart

FAST = settings(max_examples=40, deadline=None)


@FAST
@given(
    audio=st.binary(max_size=3000),
    language=st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12),
)
def test_multipart_parts_come_back_byte_exact(audio: bytes, language: str) -> None:
    body, content_type = encode_multipart_formdata(
        {"audio": ("audio.wav", audio, "audio/wav"), "language": language}
    )
    parts = parse_multipart(content_type, body)
    assert parts is not None
    assert parts["audio"].data == audio
    assert parts["audio"].filename == "audio.wav"
    assert parts["audio"].content_type == "audio/wav"
    assert parts["language"].text() == language


def test_not_multipart_is_none() -> None:
    assert parse_multipart("application/json", b"{}") is None
    assert parse_multipart("multipart/form-data", b"--x--") is None
