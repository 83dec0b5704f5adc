"""The ``file`` channel's upload state machine (``mock_server.file_channel``) driven directly,
with a recording stand-in for the data channel: what the server sends, keeps and journals.
The same transfers over a real aiortc channel are in ``test_webrtc_answerer.py``."""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import pytest

from mock_server.file_channel import FILE_LABEL, FileInfo, Upload


@attrs.define
class RecordingChannel:
    """Stands in for an ``RTCDataChannel``: keeps what is sent, closes on request."""

    readyState: str = "open"
    sent: list[str | bytes] = attrs.field(factory=list)

    def send(self, data: str | bytes) -> None:
        assert self.readyState == "open", "sent on a channel that is not open"
        self.sent.append(data)

    def close(self) -> None:
        self.readyState = "closed"


@attrs.define
class Settings:
    max_file_size: int = 1024
    stall_file_channel: bool = False


@attrs.define
class Harness:
    channel: RecordingChannel
    settings: Settings
    files: dict[str, FileInfo]
    journal: list[tuple[str, str, Any]]
    upload: Upload


@pytest.fixture
def harness() -> Harness:
    channel = RecordingChannel()
    settings = Settings()
    files: dict[str, FileInfo] = {}
    journal: list[tuple[str, str, Any]] = []
    upload = Upload(
        channel,  # type: ignore[arg-type]
        session_id="s-1",
        settings=settings,
        files=files,
        journal=lambda *entry: journal.append(entry),
    )
    return Harness(channel, settings, files, journal, upload)


def test_a_transfer_is_ready_chunks_eof_then_one_file_ref(harness: Harness) -> None:
    harness.upload.ready()
    for chunk in (b"abc", b"defg"):
        harness.upload.receive(chunk)
    harness.upload.receive(b"")
    assert len(harness.files) == 1
    info = next(iter(harness.files.values()))
    assert (info.data, info.size) == (b"abcdefg", 7)
    assert info.sha256 == hashlib.sha256(b"abcdefg").hexdigest()
    assert harness.channel.sent == ["", info.file_ref]
    assert harness.journal == [
        (FILE_LABEL, "out", ""),
        (FILE_LABEL, "in", {"file_ref": info.file_ref, "size": 7, "sha256": info.sha256}),
        (FILE_LABEL, "out", info.file_ref),
    ]


@pytest.mark.parametrize(
    ("messages", "reason", "size"),
    [
        ([b"x" * 1000, b"x" * 25], "file larger than 1024 bytes", 1025),
        ([b"abc", "text"], "text message where binary data was expected", 3),
        ([b""], "empty file", 0),
        ([b"abc", b"", b"more"], "message after end of file", 3),
    ],
)
def test_a_bad_transfer_closes_the_channel_and_journals_why(
    harness: Harness, messages: list[str | bytes], reason: str, size: int
) -> None:
    for message in messages:
        harness.upload.receive(message)
    assert harness.channel.readyState == "closed"
    assert (FILE_LABEL, "in", {"error": reason, "size": size}) in harness.journal
    harness.upload.receive(b"late chunk")  # still in flight while the channel closes: ignored
    assert harness.journal[-1] == (FILE_LABEL, "in", {"error": reason, "size": size})


def test_settings_are_read_live(harness: Harness) -> None:
    harness.settings.max_file_size = 2
    harness.upload.receive(b"abc")
    assert harness.channel.readyState == "closed"


def test_a_stalled_channel_keeps_the_file_but_never_answers(harness: Harness) -> None:
    harness.settings.stall_file_channel = True
    harness.upload.receive(b"abc")
    harness.upload.receive(b"")
    assert [info.data for info in harness.files.values()] == [b"abc"]
    assert harness.channel.sent == []
    assert harness.channel.readyState == "open"


def test_the_audio_length_of_a_file() -> None:
    from mock_server.speech import speech_duration, synthesize_wav

    wav = FileInfo(file_ref="f", size=0, sha256="", data=synthesize_wav("hello there", None))
    duration = wav.audio_duration_ms()
    assert duration is not None
    assert abs(duration - 1000 * speech_duration("hello there")) < 1.0
    assert FileInfo(file_ref="g", size=3, sha256="", data=b"not audio").audio_duration_ms() is None
