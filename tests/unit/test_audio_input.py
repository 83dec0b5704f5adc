"""perso_sync._audio_input: PyAV conversions, read_audio_input, the STF upload source
(``Session.process_stf`` reads its file through it)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest
from _audio_samples import (
    build_wav,
    chunk,
    encode_with_pyav,
    fmt_body,
    pack_samples,
    samples16,
    sine_pcm,
)

from perso_sync._audio_input import open_upload_source
from perso_sync.audio import (
    encode_wav,
    read_audio_input,
    read_wav_info,
    resample_wav,
    sniff_audio_format,
    to_stt_wav,
)
from perso_sync.errors import AudioFormatError, InvalidInputError, STFError

# --------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    ("rate", "channels", "width"),
    [(44100, 2, 2), (48000, 1, 3), (8000, 1, 2), (22050, 2, 1), (16000, 2, 4)],
)
def test_resample_gives_16k_mono_16bit_and_keeps_duration(
    rate: int, channels: int, width: int
) -> None:
    seconds = 1.0
    frames = [
        [int(0.3 * (2 ** (8 * width - 1) - 1) * math.sin(2 * math.pi * 300 * i / rate))] * channels
        for i in range(int(seconds * rate))
    ]
    wav = build_wav(
        [
            chunk(b"fmt ", fmt_body(channels, rate, width)),
            chunk(b"data", pack_samples(frames, width)),
        ]
    )
    out = resample_wav(wav)
    info = read_wav_info(out)
    assert (info.sample_rate, info.channels, info.bits_per_sample) == (16000, 1, 16)
    assert info.duration == pytest.approx(seconds, rel=0.01)
    assert max(abs(s) for s in samples16(out)) > 5000  # the sine survived, not silence


def test_mp3_made_with_pyav_is_sniffed_and_resampled() -> None:
    mp3 = encode_with_pyav(sine_pcm(1.0, 22050), 22050, "mp3", "libmp3lame")
    assert sniff_audio_format(mp3) == "mp3"
    out = resample_wav(mp3, 16000)
    info = read_wav_info(out)
    assert (info.sample_rate, info.channels, info.bits_per_sample) == (16000, 1, 16)
    assert info.duration == pytest.approx(1.0, rel=0.01)


def test_resample_refuses_junk_and_bad_rates() -> None:
    with pytest.raises(AudioFormatError):
        resample_wav(b"definitely not audio" * 50)
    with pytest.raises(InvalidInputError, match="positive int"):
        resample_wav(encode_wav(b"\0\0", 8000), 0)


def test_to_stt_wav_sends_wav_as_is() -> None:
    wav = encode_wav(sine_pcm(0.2, 44100, channels=2), 44100, channels=2)
    assert to_stt_wav(wav) == wav


@pytest.mark.parametrize(
    ("container_format", "codec"),
    [("mp3", "libmp3lame"), ("ogg", "libopus"), ("flac", "flac")],
)
def test_to_stt_wav_converts_compressed_audio(container_format: str, codec: str) -> None:
    compressed = encode_with_pyav(sine_pcm(1.0, 16000), 16000, container_format, codec)
    out = to_stt_wav(compressed)
    info = read_wav_info(out)
    assert (info.sample_rate, info.channels, info.bits_per_sample) == (16000, 1, 16)
    assert info.duration == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"hello, this is plain text and not a recording\n" * 20,
        bytes(range(256)) * 8,
        build_wav([chunk(b"data", bytes(100))]),  # RIFF/WAVE without fmt
    ],
)
def test_to_stt_wav_refuses_non_audio(junk: bytes) -> None:
    with pytest.raises(AudioFormatError):
        to_stt_wav(junk)


# --------------------------------------------------------------------------- read_audio_input


def test_read_audio_input_accepts_bytes_paths_and_binary_files(tmp_path: Path) -> None:
    payload = encode_wav(b"\1\0\2\0", 8000)
    path = tmp_path / "a.wav"
    path.write_bytes(payload)
    assert read_audio_input(payload) == payload
    assert read_audio_input(bytearray(payload)) == payload
    assert read_audio_input(memoryview(payload)) == payload
    assert read_audio_input(path) == payload
    assert read_audio_input(str(path)) == payload
    with path.open("rb") as file:
        assert read_audio_input(file) == payload


def test_read_audio_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        read_audio_input(tmp_path / "missing.wav")
    with pytest.raises(InvalidInputError, match="directory"):
        read_audio_input(tmp_path)
    text = tmp_path / "t.txt"
    text.write_text("x")
    with text.open("r") as file, pytest.raises(InvalidInputError, match="text mode"):
        read_audio_input(file)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="not int"):
        read_audio_input(42)  # type: ignore[arg-type]


# ------------------------------------------------------------- the STF upload source


class _Pipe(io.RawIOBase):
    """A binary stream that cannot seek and hands out at most ``per_read`` bytes a read (like a
    socket)."""

    def __init__(self, data: bytes, per_read: int = 5) -> None:
        self._data = data
        self._per_read = per_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(self._per_read, len(buffer))
        part, self._data = self._data[:size], self._data[size:]
        buffer[: len(part)] = part
        return len(part)


def _read_all(reader: BinaryIO, size: int) -> bytes:
    parts = []
    while part := reader.read(size):
        parts.append(part)
    return b"".join(parts)


def test_upload_source_of_bytes_and_paths_gives_head_size_and_content(tmp_path: Path) -> None:
    payload = encode_wav(bytes(range(200)), 8000)
    path = tmp_path / "speech.wav"
    path.write_bytes(payload)
    for source in (payload, bytearray(payload), path, str(path)):
        with open_upload_source(source) as (reader, head, total):
            assert head == payload[:16]
            assert total == len(payload)
            assert _read_all(reader, 7) == payload
    with open_upload_source(path) as (reader, _, _):
        pass
    assert reader.closed  # the file it opened is closed with the block


def test_upload_source_of_a_seekable_file_starts_where_the_file_is() -> None:
    file = io.BytesIO(b"skip me|" + b"ID3 the rest of the mp3")
    file.seek(8)
    with open_upload_source(file) as (reader, head, total):
        assert head == b"ID3 the rest of "
        assert total == len(b"ID3 the rest of the mp3")
        assert reader.read() == b"ID3 the rest of the mp3"  # sniffing did not consume anything
    assert not file.closed  # the caller's file stays the caller's


def test_upload_source_of_a_stream_replays_the_sniffed_head() -> None:
    payload = b"RIFF" + bytes(range(100))
    with open_upload_source(cast(BinaryIO, _Pipe(payload))) as (reader, head, total):
        assert head == payload[:16]  # read until 16 bytes, however few each read gives
        assert total is None  # unknown until the stream ends
        assert _read_all(reader, 3) == payload
    with open_upload_source(cast(BinaryIO, _Pipe(payload))) as (reader, _, _):
        assert reader.read() == payload


@pytest.mark.parametrize("per_read", [1, 2, 15])
def test_a_stream_giving_a_byte_or_two_a_read_is_sniffed_from_its_whole_head(per_read: int) -> None:
    mp3 = b"\xff\xfb\x90\x64" + bytes(60)  # an MPEG frame sync: 0xFF then 0xFB
    with open_upload_source(cast(BinaryIO, _Pipe(mp3, per_read))) as (reader, head, _):
        assert sniff_audio_format(head) == "mp3"
        assert _read_all(reader, 7) == mp3
    short = b"ID"  # the stream ends before 16 bytes: the head is what there was
    with open_upload_source(cast(BinaryIO, _Pipe(short, 1))) as (reader, head, _):
        assert head == short
        assert reader.read() == short


def test_upload_source_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    for source in (b"", empty):
        with pytest.raises(STFError, match="empty") as raised, open_upload_source(source):
            pass
        assert isinstance(raised.value.underlying_error, AudioFormatError)
    bad: list[tuple[Any, str]] = [
        (tmp_path / "nowhere.wav", "cannot open the STF file"),
        (io.StringIO("text"), "binary mode"),
        (42, "not int"),
    ]
    for source, message in bad:
        with pytest.raises(InvalidInputError, match=message), open_upload_source(source):
            pass
