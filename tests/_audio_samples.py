"""Audio test data shared by the audio unit tests: PCM, hand-built WAV files, PyAV-encoded
compressed audio (the tests' own encoder, never the code under test)."""

from __future__ import annotations

import array
import io
import math
import struct
from typing import Any

import av

from perso_sync.audio import read_wav_info


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
