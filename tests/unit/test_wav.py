"""perso_sync._wav: WAV headers under hypothesis, WAV encoding, format names."""

from __future__ import annotations

import array
import struct
from typing import Any

import pytest
from _audio_samples import (
    build_wav,
    chunk,
    fmt_body,
    pack_samples,
    sine_pcm,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perso_sync.audio import (
    encode_wav,
    get_wav_sample_rate,
    normalize_audio_format,
    read_wav,
    read_wav_info,
    sniff_audio_format,
)
from perso_sync.errors import AudioFormatError, InvalidInputError

# --------------------------------------------------------------------------- WAV headers

RATES = st.one_of(
    st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]), st.integers(1000, 96000)
)
EXTRA_CHUNK = st.tuples(
    st.sampled_from([b"LIST", b"JUNK", b"bext", b"fact", b"\0\0\0\0"]),
    st.binary(max_size=21),
)


@st.composite
def wav_files(draw: st.DrawFn) -> dict[str, Any]:
    channels = draw(st.sampled_from([1, 2]))
    width = draw(st.sampled_from([1, 2, 3, 4]))
    rate = draw(RATES)
    bits = 8 * width
    low, high = (-128, 127) if width == 1 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    frames = draw(
        st.lists(
            st.lists(st.integers(low, high), min_size=channels, max_size=channels), max_size=60
        )
    )
    before = [chunk(i, b) for i, b in draw(st.lists(EXTRA_CHUNK, max_size=3))]
    between = [chunk(i, b) for i, b in draw(st.lists(EXTRA_CHUNK, max_size=2))]
    fmt = chunk(b"fmt ", fmt_body(channels, rate, width))
    data = chunk(b"data", pack_samples(frames, width))
    prefix = b"RIFF" + b"\0\0\0\0" + b"WAVE" + b"".join(before)
    fmt_end = len(prefix) + 8 + 16
    data_offset = fmt_end + len(b"".join(between)) + 8
    return {
        "wav": build_wav([*before, fmt, *between, data]),
        "channels": channels,
        "width": width,
        "rate": rate,
        "frames": frames,
        "fmt_end": fmt_end,
        "data_offset": data_offset,
    }


def expected_mono16(frames: list[list[int]], width: int) -> list[float]:
    def to16(value: int) -> int:
        return value << 8 if width == 1 else value >> (8 * (width - 2))

    return [sum(to16(v) for v in frame) / len(frame) for frame in frames]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wav_files())
def test_header_and_reader_over_random_wavs(case: dict[str, Any]) -> None:
    wav = case["wav"]
    assert get_wav_sample_rate(wav) == case["rate"]
    info = read_wav_info(wav)
    assert (info.channels, info.bits_per_sample, info.sample_rate) == (
        case["channels"],
        case["width"] * 8,
        case["rate"],
    )
    assert info.data_offset == case["data_offset"]
    assert info.num_frames == len(case["frames"])

    audio = read_wav(wav)
    assert audio.sample_rate == case["rate"]
    assert audio.channels == 1
    got = array.array("h", audio.pcm).tolist()
    want = expected_mono16(case["frames"], case["width"])
    assert len(got) == len(want)
    # FFmpeg mixes and narrows in its own order: allow rounding, nothing more.
    assert all(abs(g - w) <= 2 for g, w in zip(got, want, strict=True)), (got, want)


@settings(max_examples=60, deadline=None)
@given(wav_files(), st.data())
def test_truncated_wavs_fail_clearly_or_read_what_is_there(
    case: dict[str, Any], data: st.DataObject
) -> None:
    wav = case["wav"]
    cut = data.draw(st.integers(0, len(wav) - 1))
    short = wav[:cut]
    if cut < case["fmt_end"]:
        with pytest.raises(AudioFormatError):
            get_wav_sample_rate(short)
        with pytest.raises(AudioFormatError):
            read_wav(short)
        return
    assert get_wav_sample_rate(short) == case["rate"]
    if cut < case["data_offset"]:
        with pytest.raises(AudioFormatError, match="no `data` chunk"):
            read_wav(short)
        return
    frame_size = case["channels"] * case["width"]
    whole = (cut - case["data_offset"]) // frame_size
    assert read_wav_info(short).num_frames == whole
    assert read_wav(short).num_frames == whole


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too small"),
        (b"RIFF\0\0\0\0WAV", "too small"),
        (b"RIFX\0\0\0\0WAVEfmt " + bytes(24), "RIFF/WAVE header is missing"),
        (b"RIFF\0\0\0\0AVI " + bytes(40), "RIFF/WAVE header is missing"),
        (build_wav([chunk(b"data", bytes(8))]), "no `fmt ` chunk"),
        (build_wav([chunk(b"LIST", bytes(5)), chunk(b"data", bytes(8))]), "no `fmt ` chunk"),
        (build_wav([chunk(b"fmt ", bytes(10))]), "`fmt ` chunk is truncated"),
        (build_wav([chunk(b"fmt ", fmt_body(1, 0, 2))]), "sample rate of 0"),
    ],
)
def test_get_wav_sample_rate_errors_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(AudioFormatError, match=message):
        get_wav_sample_rate(data)


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([chunk(b"fmt ", fmt_body(1, 8000, 2))], "no `data` chunk"),
        ([chunk(b"fmt ", fmt_body(0, 8000, 2)), chunk(b"data", b"")], "0 channels"),
        ([chunk(b"fmt ", fmt_body(1, 8000, 2)[:-2] + b"\x0c\0"), chunk(b"data", b"")], "12 bits"),
        ([chunk(b"fmt ", fmt_body(1, 8000, 1, tag=6)), chunk(b"data", b"\0")], "0x0006"),
    ],
)
def test_read_wav_errors(chunks: list[bytes], message: str) -> None:
    with pytest.raises(AudioFormatError, match=message):
        read_wav(build_wav(chunks))


def test_streaming_wav_with_unknown_data_size_reads_to_the_end() -> None:
    pcm = sine_pcm(0.01, 8000)
    wav = build_wav([chunk(b"fmt ", fmt_body(1, 8000, 2))]) + b"data\xff\xff\xff\xff" + pcm
    assert read_wav(wav).pcm == pcm
    unset = b"RIFF" + bytes(4) + wav[8 : -len(pcm) - 8] + b"data" + bytes(4) + pcm
    assert read_wav(unset).pcm == pcm


def test_empty_data_chunk_followed_by_metadata_is_empty() -> None:
    wav = build_wav(
        [chunk(b"fmt ", fmt_body(1, 8000, 2)), chunk(b"data", b""), chunk(b"LIST", b"INFOabcd")]
    )
    assert read_wav(wav).pcm == b""
    assert read_wav_info(wav).num_frames == 0


def test_float_and_extensible_wavs_are_read() -> None:
    values = [0.5, -0.25]
    flt = build_wav(
        [chunk(b"fmt ", fmt_body(1, 8000, 4, tag=3)), chunk(b"data", struct.pack("<2f", *values))]
    )
    assert array.array("h", read_wav(flt).pcm).tolist() == [16384, -8192]
    guid_pcm = struct.pack("<H", 1) + bytes(14)
    ext = fmt_body(1, 8000, 2, tag=0xFFFE) + struct.pack("<HHI", 22, 16, 4) + guid_pcm
    wav = build_wav([chunk(b"fmt ", ext), chunk(b"data", struct.pack("<2h", 7, -7))])
    assert read_wav_info(wav).encoding == "pcm"
    assert array.array("h", read_wav(wav).pcm).tolist() == [7, -7]


def test_encode_wav_round_trip_and_validation() -> None:
    pcm = sine_pcm(0.01, 22050, channels=2)
    wav = encode_wav(pcm, 22050, channels=2)
    info = read_wav_info(wav)
    assert (info.sample_rate, info.channels, info.bits_per_sample) == (22050, 2, 16)
    assert wav[info.data_offset :] == pcm
    with pytest.raises(InvalidInputError, match="whole number"):
        encode_wav(b"\0\0\0", 8000)
    for bad_rate in (0, -8000, True, 16000.0):  # True is an int to Python, not a rate
        with pytest.raises(InvalidInputError, match="sample_rate must be a positive int"):
            encode_wav(b"", bad_rate)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="sample_width"):
        encode_wav(b"", 8000, sample_width=5)


# --------------------------------------------------------------------------- format names


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"RIFF\0\0\0\0WAVE", "wav"),
        (b"ID3\x04\0", "mp3"),
        (b"\xff\xfb\x90\x00", "mp3"),  # MPEG-1 layer III
        (b"\xff\xf3\x00", "mp3"),  # MPEG-2
        (b"\xff\xe3\x00", "mp3"),  # MPEG-2.5
        (b"\xff\xd8\xff", "wav"),  # JPEG: no frame sync
        (b"OggS", "wav"),
        (b"\xff", "wav"),
        (b"", "wav"),
    ],
)
def test_sniff_audio_format(head: bytes, expected: str) -> None:
    assert sniff_audio_format(head) == expected


@pytest.mark.parametrize(
    ("hint", "fallback", "expected"),
    [
        ("wav", None, "wav"),
        ("WAV", None, "wav"),
        ("audio/wav", None, "wav"),
        ("audio/x-wav", None, "wav"),
        ("Audio/Wave", None, "wav"),
        ("audio/wav; codecs=1", None, "wav"),
        ("mp3", None, "mp3"),
        ("audio/mpeg", None, "mp3"),
        ("audio/MP3", None, "mp3"),
        (" audio/mpeg ;bitrate=128 ", None, "mp3"),
        (None, None, "wav"),
        ("", None, "wav"),
        ("audio/ogg", None, "wav"),
        ("audio/ogg", "audio/mpeg", "mp3"),
        (None, "mp3", "mp3"),
        (None, "audio/x-wav;rate=16000", "wav"),
        ("mp3", "wav", "mp3"),
        ("flac", "ogg", "wav"),
    ],
)
def test_normalize_audio_format(hint: str | None, fallback: str | None, expected: str) -> None:
    assert normalize_audio_format(hint, fallback) == expected
