"""perso_sync._audio_input: PyAV conversions, read_audio_input, the STF upload source."""

from __future__ import annotations

import math
from pathlib import Path

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

from perso_sync.audio import (
    encode_wav,
    read_audio_input,
    read_wav_info,
    resample_wav,
    sniff_audio_format,
    to_stt_wav,
)
from perso_sync.errors import AudioFormatError, InvalidInputError

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
