"""perso_sync.audio: WAV headers under hypothesis, format names, PyAV conversions, WavRecorder."""

from __future__ import annotations

import array
import gc
import io
import math
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perso_sync.audio import (
    TTS_TARGET_SAMPLE_RATE,
    Microphone,
    WavRecorder,
    create_wav_recorder,
    encode_wav,
    get_wav_sample_rate,
    normalize_audio_format,
    read_audio_input,
    read_wav,
    read_wav_info,
    resample_wav,
    sniff_audio_format,
    to_stt_wav,
)
from perso_sync.errors import AudioFormatError, InvalidInputError, RecordingError

# --------------------------------------------------------------------------- helpers


def sine_pcm(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> bytes:
    """16-bit interleaved PCM of a sine (the right channel an octave up)."""
    out = array.array("h")
    for i in range(round(seconds * rate)):
        for ch in range(channels):
            out.append(int(12000 * math.sin(2 * math.pi * freq * (ch + 1) * i / rate)))
    return out.tobytes()


def pack_samples(frames: list[list[int]], width: int) -> bytes:
    """Interleave integer samples as WAV stores them (8-bit unsigned, wider signed LE)."""
    out = bytearray()
    for frame in frames:
        for value in frame:
            if width == 1:
                out.append(value + 128)
            else:
                out += value.to_bytes(width, "little", signed=True)
    return bytes(out)


def chunk(chunk_id: bytes, body: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def fmt_body(channels: int, rate: int, width: int, tag: int = 1) -> bytes:
    block = channels * width
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, width * 8)


def build_wav(
    body_chunks: list[bytes],
) -> bytes:
    body = b"WAVE" + b"".join(body_chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def encode_with_pyav(pcm: bytes, rate: int, container_format: str, codec: str) -> bytes:
    """Compress mono s16 PCM with PyAV (the test's own encoder, not the code under test)."""
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.sample_rate = rate
    frame.planes[0].update(pcm)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        out_rate = 48000 if codec == "libopus" else rate
        stream: Any = container.add_stream(codec, rate=out_rate)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=out_rate)
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def samples16(wav: bytes) -> list[int]:
    info = read_wav_info(wav)
    assert info.bits_per_sample == 16
    data = wav[info.data_offset : info.data_offset + info.data_size]
    return array.array("h", data).tolist()


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
    with pytest.raises(InvalidInputError, match="sample_rate"):
        encode_wav(b"", 0)
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


def test_import_perso_sync_does_not_load_pyav() -> None:
    code = (
        "import sys, perso_sync, perso_sync.audio;"
        "perso_sync.get_wav_sample_rate;"
        "assert 'av' not in sys.modules and 'aiortc' not in sys.modules, 'loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- WavRecorder


@pytest.fixture
def recorder() -> Iterator[WavRecorder]:
    rec = WavRecorder(target_sample_rate=16000)
    yield rec
    if rec.is_recording():
        rec.stop()


def test_record_from_wav_path_with_timeout(tmp_path: Path, recorder: WavRecorder) -> None:
    path = tmp_path / "speech.wav"
    path.write_bytes(encode_wav(sine_pcm(2.0, 8000), 8000))
    recorder.start(path, timeout=0.5)
    assert recorder.wait(10)
    # Stopped by the timeout: the audio waits for stop(), as isSTTRecording() reports.
    assert recorder.is_recording()
    assert not recorder.is_capturing()
    with pytest.raises(RecordingError, match="already recording"):
        recorder.start(path)
    wav = recorder.stop()
    info = read_wav_info(wav)
    assert (info.sample_rate, info.channels, info.bits_per_sample) == (16000, 1, 16)
    assert info.num_frames == 8000  # exactly timeout × rate
    assert max(abs(s) for s in samples16(wav)) > 5000
    assert not recorder.is_recording()


def test_record_whole_mp3_file_until_it_ends(tmp_path: Path, recorder: WavRecorder) -> None:
    mp3 = encode_with_pyav(sine_pcm(1.0, 16000), 16000, "mp3", "libmp3lame")
    recorder.start(mp3)
    assert recorder.wait(10)
    info = read_wav_info(recorder.stop())
    assert info.duration == pytest.approx(1.0, rel=0.01)


def test_record_from_iterable_of_pcm_bytes_is_byte_exact() -> None:
    pcm = sine_pcm(0.3, 16000)
    rec = create_wav_recorder()  # no target rate: keeps the 16 kHz of the PCM
    # Chunks that split sample frames: the recorder joins them.
    rec.start([pcm[:1001], pcm[1001:4000], b"", pcm[4000:]])
    assert rec.wait(10)
    wav = rec.stop()
    assert get_wav_sample_rate(wav) == 16000
    assert wav[44:] == pcm


def test_record_from_iterable_of_stereo_pcm_at_another_rate() -> None:
    pcm = sine_pcm(0.5, 8000, channels=2)
    rec = WavRecorder(channels=2, target_sample_rate=16000)
    rec.start([pcm], pcm_sample_rate=8000, pcm_channels=2)
    assert rec.wait(10)
    info = read_wav_info(rec.stop())
    assert (info.sample_rate, info.channels) == (16000, 2)
    assert info.duration == pytest.approx(0.5, rel=0.01)


def test_record_from_av_frames() -> None:
    pcm = sine_pcm(0.2, 48000, channels=2)
    frames = []
    step = 960 * 4
    for start in range(0, len(pcm), step):
        part = pcm[start : start + step]
        frame = av.AudioFrame(format="s16", layout="stereo", samples=len(part) // 4)
        frame.sample_rate = 48000
        frame.planes[0].update(part)
        frames.append(frame)
    rec = WavRecorder(target_sample_rate=16000)
    rec.start(frames)
    assert rec.wait(10)
    info = read_wav_info(rec.stop())
    assert (info.sample_rate, info.channels) == (16000, 1)
    assert info.duration == pytest.approx(0.2, rel=0.01)


class FiniteTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, frames: list[Any]) -> None:
        super().__init__()
        self._frames = list(frames)

    async def recv(self) -> Any:
        if not self._frames:
            raise MediaStreamError
        return self._frames.pop(0)


def test_record_from_aiortc_track_until_it_ends() -> None:
    pcm = sine_pcm(0.1, 8000)
    frames = []
    for start in range(0, len(pcm), 320):
        frame = av.AudioFrame(format="s16", layout="mono", samples=160)
        frame.sample_rate = 8000
        frame.planes[0].update(pcm[start : start + 320])
        frames.append(frame)
    rec = WavRecorder()
    rec.start(FiniteTrack(frames))
    assert rec.wait(10)
    assert rec.stop()[44:] == pcm


def test_track_delivering_packets_is_reported() -> None:
    rec = WavRecorder()
    rec.start(FiniteTrack([b"encoded packet"]))
    assert rec.wait(10)
    with pytest.raises(RecordingError, match="not decoded audio frames"):
        rec.stop()


def test_record_from_live_aiortc_track_with_timeout() -> None:
    track = AudioStreamTrack()  # real-time silence, 20 ms frames at 8 kHz
    rec = WavRecorder(target_sample_rate=16000)
    rec.start(track, timeout=0.1)
    assert rec.wait(10)
    info = read_wav_info(rec.stop())
    assert info.num_frames == 1600
    assert track.readyState == "live"  # the caller's track is not stopped for them


def test_stop_while_a_live_source_blocks_returns_what_was_captured() -> None:
    blocked = threading.Event()
    release = threading.Event()
    first = sine_pcm(0.05, 16000)

    def live() -> Iterator[bytes]:
        yield first
        blocked.set()
        release.wait(10)
        yield first

    rec = WavRecorder()
    rec.start(live())
    try:
        assert blocked.wait(10)
        assert rec.is_capturing()
        assert not rec.wait(0.01)
        assert rec.stop()[44:] == first
    finally:
        release.set()


def test_failing_source_is_reported_by_stop() -> None:
    def broken() -> Iterator[bytes]:
        yield b"\0\0" * 100
        raise OSError("device unplugged")

    rec = WavRecorder()
    rec.start(broken())
    assert rec.wait(10)
    with pytest.raises(RecordingError, match="device unplugged") as caught:
        rec.stop()
    assert isinstance(caught.value.__cause__, OSError)
    assert not rec.is_recording()


def test_source_yielding_wrong_items_is_reported() -> None:
    rec = WavRecorder()
    rec.start(["not bytes"])  # type: ignore[list-item]
    assert rec.wait(10)
    with pytest.raises(RecordingError, match="yielded str"):
        rec.stop()


def test_start_twice_and_stop_without_start(recorder: WavRecorder) -> None:
    with pytest.raises(RecordingError, match="not recording"):
        recorder.stop()
    recorder.start([b"\0\0"])
    with pytest.raises(RecordingError, match="already recording"):
        recorder.start([b"\0\0"])
    recorder.stop()
    with pytest.raises(RecordingError, match="not recording"):
        recorder.stop()


def test_concurrent_starts_one_wins() -> None:
    rec = WavRecorder()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def start() -> None:
        barrier.wait(10)
        try:
            rec.start([b"\0\0"])
            outcomes.append("started")
        except RecordingError:
            outcomes.append("refused")

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(outcomes) == ["refused", "started"]
    rec.stop()


def test_no_microphone_is_a_clear_recording_error() -> None:
    rec = WavRecorder()
    with pytest.raises(RecordingError, match="no microphone could be opened"):
        rec.start(Microphone(device="perso-sync-no-such-device", format="alsa"))
    assert not rec.is_recording()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or Path("/dev/snd").exists(),
    reason="only meaningful on a Linux machine without sound devices (CI)",
)
def test_default_microphone_missing_here() -> None:
    rec = WavRecorder()
    with pytest.raises(RecordingError, match="no microphone could be opened"):
        rec.start()
    assert not rec.is_recording()


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        ("/nonexistent/speech.wav", InvalidInputError, "not found"),
        (b"not audio at all" * 10, AudioFormatError, "cannot read"),
        (42, InvalidInputError, "not int"),
        (FiniteTrack([]), None, None),
    ],
)
def test_bad_sources_fail_at_start(
    source: object, error: type[Exception] | None, message: str | None
) -> None:
    rec = WavRecorder()
    if error is None:  # a video track
        source.kind = "video"  # type: ignore[attr-defined]
        error, message = InvalidInputError, "video track"
    with pytest.raises(error, match=message):
        rec.start(source)  # type: ignore[arg-type]
    assert not rec.is_recording()


def test_constructor_and_start_argument_validation() -> None:
    with pytest.raises(InvalidInputError, match="channels"):
        WavRecorder(channels=3)
    with pytest.raises(InvalidInputError, match="positive int"):
        WavRecorder(target_sample_rate=0)
    rec = WavRecorder()
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InvalidInputError, match="timeout"):
            rec.start([b""], timeout=bad)
    assert not rec.is_recording()
    assert TTS_TARGET_SAMPLE_RATE == 16000


def test_recorder_dropped_while_recording_stops_capturing() -> None:
    release = threading.Event()

    def live() -> Iterator[bytes]:
        while not release.is_set():
            yield b"\0\0" * 160
            release.wait(0.01)

    rec = WavRecorder()
    rec.start(live())
    take = rec._take  # the capture state outlives the recorder object
    assert take is not None
    del rec
    gc.collect()
    try:
        assert take.ended.wait(10)
    finally:
        release.set()


# ------------------------------------------------------------------ the voice-chat uplink


def _tone_pcm(seconds: float, rate: int, amplitude: int = 8000) -> bytes:
    samples = array.array(
        "h",
        (
            int(amplitude * math.sin(2 * math.pi * 440 * i / rate))
            for i in range(round(seconds * rate))
        ),
    )
    return samples.tobytes()


def _peak(pcm: bytes) -> int:
    samples = array.array("h")
    samples.frombytes(pcm)
    return max((abs(value) for value in samples), default=0)


def test_uplink_sends_silence_then_the_whole_source_at_48khz_then_silence() -> None:
    import asyncio

    from perso_sync.audio import UPLINK_SAMPLE_RATE, UplinkAudio, open_audio_source

    frame_bytes = UPLINK_SAMPLE_RATE // 50 * 2  # 20 ms of 16-bit mono

    async def scenario() -> None:
        uplink = UplinkAudio()
        assert uplink.next_frame_pcm() == bytes(frame_bytes)  # nothing plays: silence
        assert uplink.wait_played(0)
        wav = encode_wav(_tone_pcm(0.5, 16000), 16000)
        feed = uplink.play(open_audio_source(wav))
        assert not uplink.wait_played(0)
        assert await feed.run() is None
        sent = b""
        while not uplink.wait_played(0):
            sent += uplink.next_frame_pcm()
        # 0.5 s at 48 kHz (the resampler keeps the length to within a frame), all of it loud.
        assert abs(len(sent) // 2 - UPLINK_SAMPLE_RATE // 2) < 960
        assert _peak(sent[: len(sent) // 2]) > 7000
        assert uplink.next_frame_pcm() == bytes(frame_bytes)

    asyncio.run(scenario())


def test_uplink_stop_drops_the_rest_and_a_fast_source_waits_for_the_reader() -> None:
    import asyncio

    from perso_sync.audio import UplinkAudio, open_audio_source

    async def scenario() -> None:
        uplink = UplinkAudio()
        wav = encode_wav(_tone_pcm(30.0, 16000), 16000)  # far more than may be decoded ahead
        feed = uplink.play(open_audio_source(wav))
        task = asyncio.create_task(feed.run())

        async def first_loud_frame() -> bytes:
            while True:  # bounded by wait_for below: the first decoded batch arrives
                pcm = uplink.next_frame_pcm()
                if _peak(pcm):
                    return pcm
                await asyncio.sleep(0.01)

        async def decoder_waits() -> None:
            while feed._room is None:  # bounded by wait_for below
                await asyncio.sleep(0.01)

        loud = await asyncio.wait_for(first_loud_frame(), 5)
        # The decoder stops ahead of the reader (a few seconds at most, not the 30 s file).
        await asyncio.wait_for(decoder_waits(), 5)
        assert not task.done()
        assert len(feed._buffer) < 10 * 48000 * 2
        uplink.stop()
        assert uplink.next_frame_pcm() == bytes(len(loud))
        assert uplink.wait_played(0)
        assert await asyncio.wait_for(task, 5) is None  # the source ended and was closed

    asyncio.run(scenario())
