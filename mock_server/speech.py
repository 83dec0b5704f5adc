"""Mock speech: TTS that makes real audio, STT that can read it back.

TTS produces a mono 16-bit PCM WAV at 24 kHz (deliberately not 16 kHz, so a client's resampling
is exercised), ``MS_PER_CHAR`` milliseconds per character of text, a deterministic voiced tone.
The text travels inside the file: a custom RIFF chunk ``pmtx`` (after ``data``; every RIFF reader
skips unknown chunks) holding ``{"text", "locale"}`` as JSON, or for MP3 (encoded with PyAV) an
ID3 comment. So STT of the mock's own TTS audio returns the original text. When the chunk is gone
(a client resampled or converted the audio), STT matches the audio's duration against what the
session synthesized recently, within 2 %. Anything else decodable as audio gets the configured
default transcript; bytes that are not audio are refused.

Legacy voice chat sends the audio over WebRTC instead (Opus, 48 kHz, with silence around it), so
neither the chunk nor the exact length survives: :func:`voiced_duration` measures the span from
the first to the last sample above a threshold, and :func:`match_uplink` compares it with what
the session synthesized, within ``UPLINK_TOLERANCE`` (the tone's soft onset and the codec move
the edges by some tens of milliseconds).
"""

from __future__ import annotations

import io
import json
import math
import struct
from array import array
from typing import Any

import attrs

TTS_SAMPLE_RATE = 24000
MS_PER_CHAR = 60.0
MIN_DURATION = 0.3
TEXT_CHUNK_ID = b"pmtx"
DURATION_TOLERANCE = 0.02
#: |sample| above which uplink audio counts as voiced (the mock voice peaks near 11 700).
VOICE_THRESHOLD = 500
#: Seconds by which a voiced span may differ from the synthesized duration and still match.
UPLINK_TOLERANCE = 0.1


class NotAudioError(ValueError):
    """The uploaded bytes are not audio the mock can read."""


@attrs.frozen(kw_only=True)
class AudioInfo:
    """What STT learned from an upload: its duration and, when embedded, the original text."""

    duration: float
    text: str | None = None
    locale: str | None = None
    format: str = "wav"


def speech_duration(text: str, ms_per_char: float = MS_PER_CHAR) -> float:
    return max(MIN_DURATION, len(text) * ms_per_char / 1000.0)


def _voice_samples(n_samples: int, rate: int) -> array[int]:
    # A 220 Hz tone with its 3rd harmonic under a 4 Hz "syllable" envelope. The pattern repeats
    # every 0.25 s, so one period is computed and tiled (fast even for long texts).
    period = rate // 4
    table = array("h")
    for i in range(period):
        t = i / rate
        envelope = 0.5 - 0.5 * math.cos(2 * math.pi * 4 * t)
        value = math.sin(2 * math.pi * 220 * t) + 0.3 * math.sin(2 * math.pi * 660 * t)
        table.append(int(9000 * envelope * value))
    repeats, rest = divmod(n_samples, period)
    samples = table * repeats
    samples.extend(table[:rest])
    return samples


def _chunk(chunk_id: bytes, payload: bytes) -> bytes:
    pad = b"\x00" if len(payload) % 2 else b""
    return chunk_id + struct.pack("<I", len(payload)) + payload + pad


def synthesize_wav(
    text: str, locale: str | None = None, *, sample_rate: int = TTS_SAMPLE_RATE
) -> bytes:
    """A WAV of ``text`` spoken by the mock voice, the text embedded in a ``pmtx`` chunk."""
    n_samples = round(speech_duration(text) * sample_rate)
    pcm = _voice_samples(n_samples, sample_rate)
    if struct.pack("=h", 1) != struct.pack("<h", 1):
        pcm.byteswap()
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    meta = json.dumps({"text": text, "locale": locale}, ensure_ascii=False).encode("utf-8")
    body = b"WAVE" + _chunk(b"fmt ", fmt) + _chunk(b"data", pcm.tobytes())
    body += _chunk(TEXT_CHUNK_ID, meta)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def synthesize_mp3(text: str, locale: str | None = None) -> bytes:
    """An MP3 of ``text`` (PyAV / LAME), the text in an ID3 comment."""
    import av

    rate = TTS_SAMPLE_RATE
    pcm = _voice_samples(round(speech_duration(text) * rate), rate)
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp3") as container:
        container.metadata["comment"] = json.dumps(
            {"text": text, "locale": locale}, ensure_ascii=False
        )
        stream = container.add_stream("libmp3lame", rate=rate)
        stream.layout = "mono"
        frame_size = 1152
        raw = pcm.tobytes()
        step = frame_size * 2
        pts = 0
        for offset in range(0, len(raw), step):
            piece = raw[offset : offset + step]
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(piece) // 2)
            frame.planes[0].update(piece)
            frame.sample_rate = rate
            frame.pts = pts
            pts += len(piece) // 2
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def _parse_embedded(raw: bytes) -> tuple[str | None, str | None]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except ValueError:
        return None, None
    if not isinstance(meta, dict) or not isinstance(meta.get("text"), str):
        return None, None
    locale = meta.get("locale")
    return meta["text"], locale if isinstance(locale, str) else None


def _read_wav(data: bytes) -> AudioInfo | None:
    """Duration and embedded text of a RIFF/WAVE file; None when it is not a usable WAV."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset = 12
    fmt: tuple[int, ...] | None = None
    data_size: int | None = None
    text: str | None = None
    locale: str | None = None
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        payload = data[offset + 8 : offset + 8 + size]
        if chunk_id == b"fmt " and len(payload) >= 16:
            fmt = struct.unpack("<HHIIHH", payload[:16])
        elif chunk_id == b"data":
            data_size = len(payload)
        elif chunk_id == TEXT_CHUNK_ID:
            text, locale = _parse_embedded(payload)
        offset += 8 + size + (size % 2)
    if fmt is None or data_size is None:
        return None
    _, channels, rate, byte_rate, _, _ = fmt
    if channels <= 0 or rate <= 0 or byte_rate <= 0:
        return None
    return AudioInfo(duration=data_size / byte_rate, text=text, locale=locale)


def _read_with_pyav(data: bytes) -> AudioInfo | None:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            samples = 0
            rate = 0
            for frame in container.decode(stream):
                samples += frame.samples
                rate = frame.sample_rate
            comment = container.metadata.get("comment") or stream.metadata.get("comment")
            fmt_name = container.format.name
    except (av.FFmpegError, ValueError, OSError, IndexError):
        return None
    if not samples or not rate:
        return None
    text, locale = _parse_embedded(comment.encode("utf-8")) if comment else (None, None)
    return AudioInfo(duration=samples / rate, text=text, locale=locale, format=fmt_name)


def inspect_audio(data: bytes) -> AudioInfo:
    """Duration and embedded text of an upload; :class:`NotAudioError` when it is not audio."""
    if not data:
        raise NotAudioError("The uploaded audio file is empty.")
    info = _read_wav(data)
    if info is None:
        info = _read_with_pyav(data)
    if info is None:
        raise NotAudioError("The uploaded file is not a supported audio file.")
    return info


def match_by_duration(duration: float, candidates: list[Any]) -> Any | None:
    """The candidate (with a ``.duration``) closest to ``duration`` within 2 %, or None."""
    best = None
    best_gap = math.inf
    for candidate in candidates:
        gap = abs(candidate.duration - duration)
        if gap <= DURATION_TOLERANCE * candidate.duration and gap < best_gap:
            best, best_gap = candidate, gap
    return best


def voiced_duration(pcm: bytes, rate: int) -> float:
    """Seconds from the first to the last sample of 16-bit mono ``pcm`` whose magnitude exceeds
    ``VOICE_THRESHOLD`` (0.0 for silence)."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if struct.pack("=h", 1) != struct.pack("<h", 1):
        samples.byteswap()
    loud = [i for i, value in enumerate(samples) if abs(value) > VOICE_THRESHOLD]
    if not loud:
        return 0.0
    return (loud[-1] + 1 - loud[0]) / rate


def match_uplink(duration: float, candidates: list[Any]) -> Any | None:
    """The candidate (with a ``.duration``) closest to a voiced ``duration`` heard over WebRTC,
    within ``UPLINK_TOLERANCE`` seconds, or None."""
    best = None
    best_gap = math.inf
    for candidate in candidates:
        gap = abs(candidate.duration - duration)
        if gap <= UPLINK_TOLERANCE and gap < best_gap:
            best, best_gap = candidate, gap
    return best
