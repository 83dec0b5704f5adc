"""The received-media component (perso_sync._webrtc_media) without WebRTC: frames in, frames out.

What a user of ``Session.frames()`` / ``latest_video_frame()`` / ``record()`` relies on: a slow
consumer never grows memory (oldest frames dropped), iterators end when the video ends, audio
frames never reach frame subscribers, and recording refuses what it cannot do before it starts.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from perso_sync._webrtc_media import ReceivedMedia
from perso_sync.errors import RecordingError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _collect(frames: object) -> list[object]:
    got: list[object] = []
    async for frame in frames:  # type: ignore[attr-defined]
        got.append(frame)
    return got


async def test_a_slow_subscriber_keeps_only_the_newest_frames() -> None:
    media = ReceivedMedia(close_timeout=1.0)
    frames = media.subscribe_video_frames(max_buffer=2, has_video=True)
    for number in range(10):
        media.push("video", number)
    media.end_video()
    assert await _collect(frames) == [8, 9]
    assert media.latest_video_frame == 9


async def test_audio_frames_do_not_reach_frame_subscribers_or_the_latest_frame() -> None:
    media = ReceivedMedia(close_timeout=1.0)
    frames = media.subscribe_video_frames(max_buffer=4, has_video=True)
    media.push("audio", "a1")
    media.push("video", "v1")
    media.push("audio", "a2")
    media.end_video()
    assert await _collect(frames) == ["v1"]
    assert media.latest_video_frame == "v1"


async def test_every_subscriber_gets_every_frame_and_a_closed_one_stops_receiving() -> None:
    media = ReceivedMedia(close_timeout=1.0)
    first = media.subscribe_video_frames(max_buffer=8, has_video=True)
    second = media.subscribe_video_frames(max_buffer=8, has_video=True)
    media.push("video", 1)
    assert await first.__anext__() == 1  # type: ignore[attr-defined]
    await first.aclose()  # type: ignore[attr-defined]
    media.push("video", 2)
    media.end_video()
    assert await _collect(second) == [1, 2]


async def test_a_subscription_without_video_ends_at_once() -> None:
    media = ReceivedMedia(close_timeout=1.0)
    with anyio.fail_after(2):
        assert await _collect(media.subscribe_video_frames(max_buffer=2, has_video=False)) == []


async def test_recording_refuses_nothing_to_record_and_a_missing_directory(tmp_path: Path) -> None:
    media = ReceivedMedia(close_timeout=1.0)
    with pytest.raises(RecordingError, match="nothing to record"):
        await media.start_recording(str(tmp_path / "a.mp4"), has_audio=False, has_video=False)
    with pytest.raises(RecordingError, match="nothing to record"):  # .wav takes audio only
        await media.start_recording(str(tmp_path / "a.wav"), has_audio=False, has_video=True)
    with pytest.raises(RecordingError, match="does not exist"):
        await media.start_recording(str(tmp_path / "no" / "a.wav"), has_audio=True, has_video=False)
    with pytest.raises(RecordingError, match="is a directory"):
        await media.start_recording(str(tmp_path), has_audio=True, has_video=False)
    await media.finish_recording()  # nothing started: a no-op
