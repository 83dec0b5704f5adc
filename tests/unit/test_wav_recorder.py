"""perso_sync._wav_recorder and the sources it opens (perso_sync._audio_sources): WavRecorder
over files, PCM iterables, PyAV frames, aiortc tracks and the microphone."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from _audio_samples import (
    encode_with_pyav,
    samples16,
    sine_pcm,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack

from perso_sync.audio import (
    TTS_TARGET_SAMPLE_RATE,
    Microphone,
    WavRecorder,
    create_wav_recorder,
    encode_wav,
    get_wav_sample_rate,
    read_wav_info,
)
from perso_sync.errors import AudioFormatError, InvalidInputError, RecordingError

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
