"""perso_sync._uplink_audio: the voice-chat uplink (silence, a played source at 48 kHz, stop)."""

from __future__ import annotations

import array
import math

from perso_sync.audio import encode_wav

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
