"""Pure parts of the mock's synthetic avatar: size fitting, the speech timeline, the picture."""

from __future__ import annotations

import fractions
import math
import struct

import av
from hypothesis import given
from hypothesis import strategies as st

from mock_server.media import (
    AUDIO_SAMPLES_PER_FRAME,
    Avatar,
    SpeechTimeline,
    fit_size,
    indicator_band,
    opus_packets,
)
from mock_server.webrtc import PeerConfig

sizes = st.integers(min_value=1, max_value=8192)
caps = st.integers(min_value=2, max_value=4096)


@given(sizes, sizes, caps, caps)
def test_fit_size_never_exceeds_the_cap_or_the_request_and_keeps_the_aspect(
    width: int, height: int, max_width: int, max_height: int
) -> None:
    fitted_width, fitted_height = fit_size(width, height, max_width, max_height)
    assert fitted_width % 2 == 0
    assert fitted_height % 2 == 0
    assert 2 <= fitted_width <= max(2, min(width, max_width))
    assert 2 <= fitted_height <= max(2, min(height, max_height))
    if fitted_width > 20 and fitted_height > 20:
        # even-rounding costs at most 2 px per side
        assert math.isclose(fitted_width / fitted_height, width / height, rel_tol=0.15)


def test_fit_size_leaves_small_even_sizes_alone() -> None:
    assert fit_size(160, 120, 320, 240) == (160, 120)
    assert fit_size(1920, 1080, 320, 240) == (320, 180)
    assert fit_size(1080, 1920, 320, 240) == (134, 240)


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0.01, 5)), max_size=20))
def test_utterances_play_one_after_another(steps: list[tuple[float, float]]) -> None:
    timeline = SpeechTimeline()
    now = 0.0
    previous_end = 0.0
    for gap, duration in steps:
        now += gap
        start = timeline.add(now, duration)
        assert start == max(now, previous_end)
        assert timeline.speaking(start + duration / 2)
        previous_end = start + duration
        assert timeline.ends_at() == previous_end
    assert not timeline.speaking(previous_end)


def test_cut_keeps_the_utterance_playing_and_drops_the_rest() -> None:
    timeline = SpeechTimeline()
    timeline.add(0.0, 1.0)
    timeline.add(0.0, 1.0)  # plays 1.0 .. 2.0
    timeline.cut(0.5)
    assert timeline.speaking(0.9)
    assert not timeline.speaking(1.5)
    assert timeline.ends_at() is None


def _avatar(speaking: bool, template: dict[str, str] | None = None) -> Avatar:
    avatar = Avatar(width=64, height=48, settings=PeerConfig(), speaking=lambda: speaking)
    avatar.template = template
    return avatar


def _band_mean(frame: object) -> float:
    plane = frame.planes[0]  # type: ignore[attr-defined]
    data = bytes(plane)
    start, stop = indicator_band(64, 48)
    rows = [data[y * plane.line_size : y * plane.line_size + 64] for y in range(start, stop)]
    return sum(map(sum, rows)) / sum(map(len, rows))


def test_the_picture_is_deterministic_and_shows_speech() -> None:
    idle = _avatar(False).video_frame(0.0)
    assert (idle.width, idle.height) == (64, 48)
    assert bytes(idle.planes[0]) == bytes(_avatar(False).video_frame(7.3).planes[0])
    speaking = _avatar(True)
    open_wide, half_open = speaking.video_frame(0.0), speaking.video_frame(0.125)
    assert bytes(open_wide.planes[0]) != bytes(half_open.planes[0]), "the mouth moves"
    assert _band_mean(idle) < 32
    assert _band_mean(open_wide) > 200
    themed = _avatar(False, {"model": "m1", "dress": "suit"}).video_frame(0.0)
    assert bytes(themed.planes[1]) != bytes(idle.planes[1]), "the template changes the colours"


def test_audio_is_a_tone_while_speaking_and_silence_otherwise() -> None:
    silent = bytes(_avatar(False).audio_frame().planes[0])
    tone = bytes(_avatar(True).audio_frame().planes[0])
    assert len(silent) == len(tone) == 2 * AUDIO_SAMPLES_PER_FRAME
    assert silent == bytes(len(silent))
    assert tone != silent


def test_preencoded_opus_decodes_to_silence_and_to_the_tone() -> None:
    decoder = av.CodecContext.create("opus", "r")
    to_s16 = av.AudioResampler(format="s16", layout="mono", rate=48000)
    peaks = []
    for packet_bytes in opus_packets():
        # Repeated, as on the wire: the decoder needs a few packets to reach full level.
        for index in range(5):
            packet = av.Packet(packet_bytes)
            packet.pts = index * 960
            packet.time_base = fractions.Fraction(1, 48000)
            pcm = b"".join(
                bytes(out.planes[0])[: 2 * out.samples]
                for frame in decoder.decode(packet)
                for out in to_s16.resample(frame)
            )
        peaks.append(max(abs(x) for x in struct.unpack(f"<{len(pcm) // 2}h", pcm)))
    silence_peak, tone_peak = peaks
    assert silence_peak < 50
    assert tone_peak > 3000
