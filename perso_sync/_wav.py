"""Pure WAV and format-name code: RIFF headers, WAV encoding, format sniffing and names.

Sans-IO: bytes in, facts or bytes out; no PyAV, no threads, no files. Public names are
re-exported by :mod:`perso_sync.audio`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Final, Literal

import attrs

from perso_sync.errors import AudioFormatError, InvalidInputError

TTS_TARGET_SAMPLE_RATE: Final = 16000
"""The sample rate (Hz) of the TTS system; use it when resampling audio for TTS/STT."""

AudioFormat = Literal["wav", "mp3"]

# WAVE format tags we decode ourselves; anything else (A-law, ADPCM, ...) goes through FFmpeg.
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


# =============================================================================================
# WAV headers


@attrs.frozen(kw_only=True)
class WavInfo:
    """What the header of a WAV file says, and where its samples are.

    ``encoding`` is ``"pcm"`` (integer samples), ``"float"`` (IEEE float) or ``"other"``
    (e.g. A-law; :func:`read_wav` refuses it, :func:`resample_wav` lets FFmpeg decode it).
    ``data_size`` counts only the bytes really present, so a cut-off file reads as a shorter one;
    a data size left unset by a streaming writer means "up to the end".
    """

    sample_rate: int
    channels: int
    bits_per_sample: int
    encoding: Literal["pcm", "float", "other"]
    format_tag: int
    data_offset: int
    data_size: int

    @property
    def frame_size(self) -> int:
        """Bytes per sample frame (one sample for every channel)."""
        return self.channels * ((self.bits_per_sample + 7) // 8)

    @property
    def num_frames(self) -> int:
        """Whole sample frames in the data chunk."""
        return self.data_size // self.frame_size if self.frame_size else 0

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate


def _check_riff(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data).cast("B")
    if len(view) < 12:
        raise AudioFormatError(
            f"WAV data is too small ({len(view)} bytes): a WAV file starts with a 12-byte "
            "RIFF/WAVE header"
        )
    if not is_riff_wave(view):
        raise AudioFormatError("not a WAV file: the RIFF/WAVE header is missing")
    return view


def is_riff_wave(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` starts with a RIFF/WAVE header (says nothing about the chunks)."""
    head = bytes(memoryview(data).cast("B")[:12])
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def check_sample_rate(rate: int, name: str = "sample rate") -> int:
    """``rate`` if it is a positive int (not a bool), else :class:`InvalidInputError` naming it."""
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise InvalidInputError(f"{name} must be a positive int, not {rate!r}")
    return rate


def _chunks(view: memoryview) -> Iterator[tuple[bytes, int, int]]:
    """(chunk id, body offset, declared body size) for every chunk header that is present."""
    pos = 12
    while pos + 8 <= len(view):
        chunk_id = bytes(view[pos : pos + 4])
        (size,) = struct.unpack_from("<I", view, pos + 4)
        yield chunk_id, pos + 8, size
        # RIFF pads every odd-sized chunk to an even length.
        pos += 8 + size + (size & 1)


def _parse_fmt(view: memoryview, body: int, size: int) -> tuple[int, int, int, int]:
    """(format tag, channels, sample rate, bits per sample) of a ``fmt `` chunk."""
    if size < 16 or body + 16 > len(view):
        raise AudioFormatError(
            "WAV `fmt ` chunk is truncated: it needs 16 bytes, "
            f"{min(size, len(view) - body)} are present"
        )
    tag, channels, rate, _byte_rate, _block_align, bits = struct.unpack_from("<HHIIHH", view, body)
    if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40 and body + 26 <= len(view):
        # The real format tag is the first two bytes of the sub-format GUID.
        (tag,) = struct.unpack_from("<H", view, body + 24)
    return tag, channels, rate, bits


def get_wav_sample_rate(data: bytes | bytearray | memoryview) -> int:
    """The sample rate (Hz) from the ``fmt `` chunk of WAV ``data``.

    Raises :class:`AudioFormatError` when the data is too small for a header, lacks the
    RIFF/WAVE header, or has no (complete) ``fmt `` chunk. Chunks before ``fmt `` are skipped.
    """
    view = _check_riff(data)
    for chunk_id, body, size in _chunks(view):
        if chunk_id == b"fmt ":
            rate = _parse_fmt(view, body, size)[2]
            if rate == 0:
                raise AudioFormatError("WAV `fmt ` chunk has a sample rate of 0")
            return rate
    raise AudioFormatError("WAV file has no `fmt ` chunk")


def read_wav_info(data: bytes | bytearray | memoryview) -> WavInfo:
    """Parse the header of WAV ``data``: the ``fmt `` chunk and where the ``data`` chunk is.

    Raises :class:`AudioFormatError` for a missing/truncated header, a missing ``fmt `` or
    ``data`` chunk, zero channels or sample rate, or a sample size that is not whole bytes.
    """
    view = _check_riff(data)
    (riff_size,) = struct.unpack_from("<I", view, 4)
    fmt: tuple[int, int, int, int] | None = None
    data_chunk: tuple[int, int] | None = None
    for chunk_id, body, size in _chunks(view):
        if chunk_id == b"fmt " and fmt is None:
            fmt = _parse_fmt(view, body, size)
        elif chunk_id == b"data" and data_chunk is None:
            # Writers that cannot seek back leave the size at 0xFFFFFFFF, or at 0 with a RIFF
            # size of 0 too: the samples then run to the end. Never trust more than is present.
            present = max(0, len(view) - body)
            streaming = size == 0xFFFFFFFF or (size == 0 and riff_size in (0, 0xFFFFFFFF))
            data_chunk = (body, present if streaming else min(size, present))
        if fmt is not None and data_chunk is not None:
            break
    if fmt is None:
        raise AudioFormatError("WAV file has no `fmt ` chunk")
    if data_chunk is None:
        raise AudioFormatError("WAV file has no `data` chunk")
    tag, channels, rate, bits = fmt
    if channels == 0:
        raise AudioFormatError("WAV `fmt ` chunk declares 0 channels")
    if rate == 0:
        raise AudioFormatError("WAV `fmt ` chunk has a sample rate of 0")
    if bits == 0 or bits % 8:
        raise AudioFormatError(f"WAV sample size of {bits} bits is not a whole number of bytes")
    encoding: Literal["pcm", "float", "other"] = (
        "pcm" if tag == _WAVE_FORMAT_PCM else "float" if tag == _WAVE_FORMAT_IEEE_FLOAT else "other"
    )
    return WavInfo(
        sample_rate=rate,
        channels=channels,
        bits_per_sample=bits,
        encoding=encoding,
        format_tag=tag,
        data_offset=data_chunk[0],
        data_size=data_chunk[1],
    )


def encode_wav(pcm: bytes, sample_rate: int, channels: int = 1, sample_width: int = 2) -> bytes:
    """A complete WAV file (44-byte header) around little-endian interleaved PCM.

    ``sample_width`` is in bytes (1 = unsigned 8-bit, 2/3/4 = signed). Raises
    :class:`InvalidInputError` for a non-positive rate or channel count, an unsupported width, or
    PCM that is not a whole number of sample frames.
    """
    check_sample_rate(sample_rate, "sample_rate")
    if not isinstance(channels, int) or channels <= 0:
        raise InvalidInputError(f"channels must be a positive int, not {channels!r}")
    if sample_width not in (1, 2, 3, 4):
        raise InvalidInputError(f"sample_width must be 1, 2, 3 or 4 bytes, not {sample_width!r}")
    block_align = channels * sample_width
    if len(pcm) % block_align:
        raise InvalidInputError(
            f"PCM of {len(pcm)} bytes is not a whole number of {block_align}-byte sample frames"
        )
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        _WAVE_FORMAT_PCM,
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        sample_width * 8,
        b"data",
        len(pcm),
    )
    return header + bytes(pcm)


# =============================================================================================
# Format names


def sniff_audio_format(data: bytes | bytearray | memoryview) -> AudioFormat:
    """``"wav"`` or ``"mp3"`` from the first bytes (docs/PROTOCOL.md §10).

    ``RIFF`` → wav; ``ID3`` (a tag) or an MPEG frame sync (0xFF then a byte whose top three bits
    are set, i.e. 0xE0–0xFF: the 11-bit sync word) → mp3; anything else → wav.
    """
    head = bytes(memoryview(data).cast("B")[:4])
    if head == b"RIFF":
        return "wav"
    if head.startswith(b"ID3"):
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "mp3"
    return "wav"


_FORMAT_ALIASES: Final[Mapping[str, AudioFormat]] = {
    "wav": "wav",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "mp3": "mp3",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
}


def _known_format(hint: object) -> AudioFormat | None:
    if not isinstance(hint, str):
        return None
    # MIME parameters (";codecs=1") say nothing about the container.
    return _FORMAT_ALIASES.get(hint.split(";", 1)[0].strip().lower())


def normalize_audio_format(hint: str | None, fallback: str | None = None) -> AudioFormat:
    """The STF format name for a hint: ``"wav"`` or ``"mp3"`` (docs/PROTOCOL.md §8).

    ``wav``, ``audio/wav``, ``audio/x-wav``, ``audio/wave`` → ``"wav"``; ``mp3``,
    ``audio/mpeg``, ``audio/mp3`` → ``"mp3"``; case-insensitive, MIME parameters after ``;``
    ignored. An unknown or missing ``hint`` falls back to ``fallback`` (e.g. the file's own MIME
    type or :func:`sniff_audio_format` of its bytes), normalized the same way, then to ``"wav"``.

    >>> normalize_audio_format("Audio/MPEG; bitrate=128")
    'mp3'
    >>> normalize_audio_format("ogg", fallback="audio/x-wav")
    'wav'
    """
    return _known_format(hint) or _known_format(fallback) or "wav"
