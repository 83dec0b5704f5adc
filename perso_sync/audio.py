"""Audio helpers: WAV headers, format sniffing, resampling and recording, with PyAV doing the DSP.

What is here (docs/PROTOCOL.md §8 and §10):

* WAV facts: :func:`get_wav_sample_rate`, :func:`read_wav_info` (walks the RIFF chunk list, so
  ``LIST``/``JUNK`` chunks before ``fmt `` are fine), :func:`read_wav` (PCM 8/16/24/32-bit or
  float, mixed down to 16-bit mono), :func:`encode_wav`.
* Format names: :func:`sniff_audio_format` (from the first bytes) and
  :func:`normalize_audio_format` (``"audio/x-wav; codecs=1"`` → ``"wav"``).
* Conversions: :func:`resample_wav` (any WAV or MP3 → 16-bit mono PCM WAV at a given rate) and
  :func:`to_stt_wav` (what the STT endpoint gets: WAV as is, MP3/OGG/FLAC/... converted).
* Input: :func:`read_audio_input` (bytes, a path or a binary file object → bytes).
* Recording: :class:`WavRecorder` / :func:`create_wav_recorder` over the system microphone
  (:class:`Microphone`), an audio file, an iterable of PCM frames or an aiortc audio track.
* Sending: :class:`UplinkAudio`, the outgoing audio track of a session opened with
  ``voice_chat=True`` (legacy voice chat): silence, or any of the recording sources above played
  in real time while voice chat records.

PyAV (which aiortc brings) is imported inside the functions that need it, so importing this
module — or ``perso_sync`` — never loads FFmpeg. Every failure is a :mod:`perso_sync.errors`
exception: :class:`AudioFormatError` for data that is not (readable) audio,
:class:`InvalidInputError` for a wrong argument, :class:`RecordingError` for recorder misuse or a
microphone that cannot be opened.
"""

from __future__ import annotations

import io
import math
import os
import struct
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal, Protocol, TypeAlias, Union, cast

import attrs

from perso_sync.errors import (
    AudioFormatError,
    InvalidInputError,
    RecordingError,
    RuntimeUsageError,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

    import av

__all__ = [
    "TTS_TARGET_SAMPLE_RATE",
    "AudioFormat",
    "AudioSource",
    "Microphone",
    "PcmAudio",
    "WavInfo",
    "WavRecorder",
    "create_wav_recorder",
    "encode_wav",
    "get_wav_sample_rate",
    "normalize_audio_format",
    "read_audio_input",
    "read_wav",
    "read_wav_info",
    "resample_wav",
    "sniff_audio_format",
    "to_stt_wav",
]

TTS_TARGET_SAMPLE_RATE: Final = 16000
"""The sample rate (Hz) of the TTS system; use it when resampling audio for TTS/STT."""

AudioFormat = Literal["wav", "mp3"]

# WAVE format tags we decode ourselves; anything else (A-law, ADPCM, ...) goes through FFmpeg.
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE

# Samples per frame when we hand PCM to PyAV: bounds the copies made for a long file.
_SAMPLES_PER_FRAME = 65536


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
    if bytes(view[0:4]) != b"RIFF" or bytes(view[8:12]) != b"WAVE":
        raise AudioFormatError("not a WAV file: the RIFF/WAVE header is missing")
    return view


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
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InvalidInputError(f"sample_rate must be a positive int, not {sample_rate!r}")
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


# =============================================================================================
# PCM through PyAV


@attrs.frozen
class PcmAudio:
    """Decoded audio: little-endian signed 16-bit interleaved PCM."""

    pcm: bytes = attrs.field(repr=lambda pcm: f"<{len(pcm)} bytes>")
    sample_rate: int
    channels: int = 1

    @property
    def num_frames(self) -> int:
        """Sample frames (one sample per channel each)."""
        return len(self.pcm) // (2 * self.channels)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate

    def to_wav(self) -> bytes:
        """This audio as a 16-bit PCM WAV file."""
        return encode_wav(self.pcm, self.sample_rate, self.channels, 2)


def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:  # aiortc depends on av, so this means a broken install
        raise AudioFormatError(
            f"PyAV (the 'av' package) is needed for audio decoding: {exc}"
        ) from exc
    return av


def _av_errors() -> tuple[type[BaseException], ...]:
    av = _import_av()
    # InvalidDataError & co. derive from FFmpegError; PyAV raises ValueError for frames that do
    # not fit a resampler or a plane.
    return (av.FFmpegError, ValueError)


def _layout_name(channels: int) -> str:
    # FFmpeg knows mono/stereo by name; "<n>c" is its default layout for n channels, which the
    # resampler can downmix.
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def _frame_from_pcm(pcm: bytes, sample_format: str, channels: int, rate: int) -> av.AudioFrame:
    av = _import_av()
    bytes_per_sample = av.AudioFormat(sample_format).bytes
    samples = len(pcm) // (bytes_per_sample * channels)
    frame = av.AudioFrame(format=sample_format, layout=_layout_name(channels), samples=samples)
    frame.sample_rate = rate
    frame.planes[0].update(pcm)
    return frame  # type: ignore[no-any-return]


def _packed_bytes(frame: av.AudioFrame, channels: int) -> bytes:
    # Planes are padded for SIMD: only the first samples × channels × 2 bytes are audio.
    size = frame.samples * channels * 2
    return memoryview(frame.planes[0])[:size].tobytes()


class _PcmSink:
    """Turns any sequence of ``av.AudioFrame`` into s16 interleaved PCM at one rate and layout.

    A frame whose format, layout or rate differs from the previous one gets a fresh resampler
    (PyAV's refuses such frames). ``rate=None`` adopts the first frame's rate. Not thread-safe:
    one user at a time.
    """

    def __init__(self, rate: int | None, channels: int) -> None:
        self.rate = rate
        self.channels = channels
        self._resampler: Any = None
        self._key: tuple[str, str, int] | None = None

    def push(self, frame: av.AudioFrame) -> bytes:
        av = _import_av()
        if not frame.sample_rate:
            raise AudioFormatError("an audio frame without a sample rate cannot be converted")
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        out = b""
        if key != self._key:
            out = self.flush()
            if self.rate is None:
                self.rate = frame.sample_rate
            self._resampler = av.AudioResampler(
                format="s16", layout=_layout_name(self.channels), rate=self.rate
            )
            self._key = key
        converted = self._resampler.resample(frame)
        return out + b"".join(_packed_bytes(f, self.channels) for f in converted)

    def flush(self) -> bytes:
        resampler, self._resampler, self._key = self._resampler, None, None
        if resampler is None:
            return b""
        return b"".join(_packed_bytes(f, self.channels) for f in resampler.resample(None))


def _wav_frames(info: WavInfo, data: bytes | bytearray | memoryview) -> Iterator[av.AudioFrame]:
    """The samples of a PCM/float WAV as PyAV frames in their own format (no conversion)."""
    width = info.bits_per_sample // 8
    if info.encoding == "pcm":
        sample_format = {1: "u8", 2: "s16", 3: "s32", 4: "s32"}.get(width)
    elif info.encoding == "float":
        sample_format = {4: "flt", 8: "dbl"}.get(width)
    else:
        sample_format = None
    if sample_format is None:
        raise AudioFormatError(
            f"WAV encoding not supported: format tag {info.format_tag:#06x} with "
            f"{info.bits_per_sample}-bit samples (PCM 8/16/24/32-bit or float 32/64-bit only)"
        )
    view = memoryview(data).cast("B")
    frame_bytes = info.frame_size
    end = info.data_offset + info.num_frames * frame_bytes
    step = _SAMPLES_PER_FRAME * frame_bytes
    for start in range(info.data_offset, end, step):
        chunk = view[start : min(start + step, end)]
        if width == 3:
            # No 24-bit sample format in FFmpeg: widen each sample to 32 bits, low byte zero.
            count = len(chunk) // 3
            wide = bytearray(count * 4)
            wide[1::4] = chunk[0::3]
            wide[2::4] = chunk[1::3]
            wide[3::4] = chunk[2::3]
            pcm = bytes(wide)
        else:
            pcm = chunk.tobytes()
        yield _frame_from_pcm(pcm, sample_format, info.channels, info.sample_rate)


def read_wav(data: bytes | bytearray | memoryview) -> PcmAudio:
    """Decode a PCM (8/16/24/32-bit) or float WAV to 16-bit **mono** PCM at its own rate.

    Stereo is mixed down to mono (the average of both channels); more channels get FFmpeg's
    standard downmix. A cut-off data chunk gives the whole frames that are present. Raises
    :class:`AudioFormatError` for a bad header or an encoding other than PCM/float.
    """
    info = read_wav_info(data)
    if info.encoding == "pcm" and info.bits_per_sample == 16 and info.channels == 1:
        start = info.data_offset
        return PcmAudio(bytes(data[start : start + info.num_frames * 2]), info.sample_rate)
    return PcmAudio(_wav_to_mono_pcm(info, data, info.sample_rate, "convert"), info.sample_rate)


def _wav_to_mono_pcm(
    info: WavInfo, data: bytes | bytearray | memoryview, rate: int, doing: str
) -> bytes:
    """Every sample of a PCM/float WAV as 16-bit mono PCM at ``rate`` (PyAV mixes/resamples)."""
    sink = _PcmSink(rate, 1)
    try:
        return b"".join(sink.push(frame) for frame in _wav_frames(info, data)) + sink.flush()
    except _av_errors() as exc:
        raise AudioFormatError(f"cannot {doing} the WAV samples: {exc}") from exc


def _decode_with_av(source: Any, rate: int | None, channels: int) -> PcmAudio:
    """Decode the first audio stream of anything FFmpeg reads (bytes-like wrapped, path, file)."""
    av = _import_av()
    errors = _av_errors()
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        container = av.open(source, mode="r")
    except errors as exc:
        raise AudioFormatError(f"not audio that FFmpeg can read: {exc}") from exc
    try:
        if not container.streams.audio:
            raise AudioFormatError(
                f"no audio stream in the data (FFmpeg sees format {container.format.name!r})"
            )
        sink = _PcmSink(rate, channels)
        parts = [sink.push(frame) for frame in container.decode(container.streams.audio[0])]
        parts.append(sink.flush())
    except errors as exc:
        raise AudioFormatError(f"cannot decode the audio: {exc}") from exc
    finally:
        container.close()
    pcm = b"".join(parts)
    if not pcm or sink.rate is None:
        raise AudioFormatError("no audio samples could be decoded from the data")
    return PcmAudio(pcm, sink.rate, channels)


def _is_riff_wave(data: bytes | bytearray | memoryview) -> bool:
    head = bytes(memoryview(data).cast("B")[:12])
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def _check_rate(rate: int) -> int:
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise InvalidInputError(f"sample rate must be a positive int, not {rate!r}")
    return rate


def resample_wav(data: bytes | bytearray | memoryview, rate: int = TTS_TARGET_SAMPLE_RATE) -> bytes:
    """Convert WAV or MP3 (or anything FFmpeg decodes) to a 16-bit mono PCM WAV at ``rate`` Hz.

    PCM/float WAVs are read by :func:`read_wav_info` (any chunk order, 8–32-bit, stereo mixed
    down); other data is decoded by FFmpeg. Resampling is FFmpeg's (``av.AudioResampler``), so
    the duration is kept to within a few samples. Raises :class:`AudioFormatError` when the data
    cannot be decoded (``process_tts`` then keeps the original bytes).
    """
    _check_rate(rate)
    if _is_riff_wave(data):
        info = read_wav_info(data)
        if info.encoding != "other":
            return encode_wav(_wav_to_mono_pcm(info, data, rate, "resample"), rate)
    return _decode_with_av(data, rate, 1).to_wav()


def to_stt_wav(data: bytes | bytearray | memoryview) -> bytes:
    """The bytes to send to the STT endpoint for ``data`` (docs/PROTOCOL.md §10).

    A WAV file (with a readable ``fmt `` chunk) is sent as is. Anything else that FFmpeg can
    decode — MP3, OGG/Opus/Vorbis, FLAC, AAC, ... — becomes a 16 kHz mono 16-bit WAV. Data that is
    not audio raises :class:`AudioFormatError`, before any request is made.
    """
    if _is_riff_wave(data):
        get_wav_sample_rate(data)  # a clear error now beats a 400 from the server
        return bytes(data)
    if not len(data):
        raise AudioFormatError("the audio is empty")
    return _decode_with_av(data, TTS_TARGET_SAMPLE_RATE, 1).to_wav()


def read_audio_input(
    audio: bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO,
) -> bytes:
    """The bytes of ``audio``: bytes-like as is, a path read from disk, a binary file object read
    to its end (from its current position).

    Raises :class:`InvalidInputError` for a missing file, a directory, a text-mode file object or
    any other type. (The STF upload streams files instead of using this.)
    """
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return bytes(audio)
    if isinstance(audio, (str, os.PathLike)):
        path = os.fspath(audio)
        try:
            with open(path, "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise InvalidInputError(f"audio file not found: {path!r}") from None
        except IsADirectoryError:
            raise InvalidInputError(f"audio path is a directory, not a file: {path!r}") from None
        except OSError as exc:
            raise InvalidInputError(f"cannot read audio file {path!r}: {exc}") from exc
    read = getattr(audio, "read", None)
    if callable(read):
        content = read()
        if isinstance(content, str):
            raise InvalidInputError("audio file object is in text mode; open it with 'rb'")
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise InvalidInputError(
                f"audio file object's read() returned {type(content).__name__}, not bytes"
            )
        return bytes(content)
    raise InvalidInputError(
        f"audio must be bytes, a path or a binary file object, not {type(audio).__name__}"
    )


# =============================================================================================
# Recording

#: How long ``stop()`` waits for the capture task to let go of its source (seconds).
STOP_TIMEOUT: Final = 5.0
#: Wall-clock slack after ``timeout`` for sources that deliver audio late or in bursts (seconds).
TIMEOUT_GRACE: Final = 1.0
#: How long opening a capture device may take (seconds).
MICROPHONE_OPEN_TIMEOUT: Final = 5
# Frames a file source decodes per trip to a worker thread (files never block, so batch them).
_FILE_FRAMES_PER_PULL = 16


@attrs.frozen(kw_only=True)
class Microphone:
    """A capture device, opened with FFmpeg through aiortc's ``MediaPlayer``.

    Without ``device``/``format``, the platform default is used: on Linux PulseAudio's, then
    ALSA's ``default`` device; on macOS AVFoundation's default input (``"none:default"``).
    DirectShow (Windows) has no default device name: pass
    ``Microphone(device="audio=<name>", format="dshow")`` (``ffmpeg -list_devices true -f dshow
    -i dummy`` lists the names). ``options`` are FFmpeg input options (e.g.
    ``{"sample_rate": "16000"}``).
    """

    device: str | None = None
    format: str | None = None
    options: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    def _attempts(self) -> list[tuple[str, str | None]]:
        if self.device is not None or self.format is not None:
            return [(self.device or "default", self.format)]
        platform: str = sys.platform  # a plain str: mypy would pin sys.platform to the host's
        if platform.startswith("linux"):
            return [("default", "pulse"), ("default", "alsa")]
        if platform == "darwin":
            return [("none:default", "avfoundation")]
        return []


if TYPE_CHECKING:
    from aiortc import MediaStreamTrack

#: What :meth:`WavRecorder.start` records from (see there).
AudioSource: TypeAlias = Union[
    str,
    "os.PathLike[str]",
    bytes,
    bytearray,
    memoryview,
    BinaryIO,
    "Microphone",
    "MediaStreamTrack",
    Iterable[Union[bytes, "av.AudioFrame"]],
]


class _PcmTarget(Protocol):
    """Where a source's converted PCM goes: a recording's take, or the voice-chat uplink."""

    sink: _PcmSink

    def add(self, pcm: bytes) -> bool:
        """Keep ``pcm``; False when no more is wanted (the source should stop)."""

    async def wait_for_room(self) -> None:
        """Return once more audio may be added (a fast source waits here for a slow reader)."""


class _Source(Protocol):
    async def pump(self, take: _PcmTarget) -> None:
        """Feed converted audio to ``take.add`` until the source ends or ``add`` says stop."""

    async def close(self) -> None:
        """Release what the source owns; never raises for a normal close."""

    def close_at_exit(self) -> None:
        """Release what must not outlive the interpreter (threads), from any thread."""


class _TrackSource:
    """An aiortc audio track, read on the runtime loop; ``player`` is owned when we opened it."""

    def __init__(self, track: Any, player: Any = None) -> None:
        self._track = track
        self._player = player
        self._lock = threading.Lock()

    async def pump(self, take: _PcmTarget) -> None:
        from aiortc.mediastreams import MediaStreamError

        frame_type = _import_av().AudioFrame
        while True:
            try:
                frame = await self._track.recv()
            except MediaStreamError:  # the track ended: keep what the resampler still holds
                take.add(take.sink.flush())
                return
            if not isinstance(frame, frame_type):
                raise RecordingError(
                    f"the track delivered {type(frame).__name__}, not decoded audio frames"
                )
            # One 20 ms frame converts in microseconds, so it is fine to do it on the loop.
            if not take.add(take.sink.push(frame)):
                return

    async def close(self) -> None:
        if self._player is not None:
            from perso_sync._runtime import run_sync_off_loop

            # Stopping MediaPlayer joins its reader thread: never on the loop.
            await run_sync_off_loop(self.close_at_exit)

    def close_at_exit(self) -> None:
        with self._lock:
            player, self._player = self._player, None
        if player is not None and player.audio is not None:
            player.audio.stop()  # the last track stopped: the player's thread ends, file closes


class _BlockingSource:
    """Frames from an iterator that may block (a file being decoded, a user's generator), pulled
    in worker threads and converted there, so the loop never waits on it.

    ``bytes`` items are 16-bit signed little-endian interleaved PCM at ``pcm_rate`` with
    ``pcm_channels``; a sample frame split between two items is joined. ``av.AudioFrame`` items
    carry their own format.
    """

    def __init__(
        self,
        items: Iterator[object],
        *,
        batch: int,
        pcm_rate: int,
        pcm_channels: int,
        on_close: Any = None,
    ) -> None:
        self._items = items
        self._batch = batch
        self._pcm_rate = pcm_rate
        self._pcm_channels = pcm_channels
        self._on_close = on_close
        self._carry = b""
        self._closed = False
        # Held while a worker pulls: close() must not free a container FFmpeg is decoding.
        self._lock = threading.Lock()

    def _to_frame(self, item: object) -> av.AudioFrame | None:
        if isinstance(item, _import_av().AudioFrame):
            return cast("av.AudioFrame", item)
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = self._carry + bytes(item)
            frame_bytes = 2 * self._pcm_channels
            whole = len(data) - len(data) % frame_bytes
            self._carry = data[whole:]
            if not whole:
                return None
            return _frame_from_pcm(data[:whole], "s16", self._pcm_channels, self._pcm_rate)
        raise RecordingError(
            f"the audio source yielded {type(item).__name__}; expected bytes (16-bit PCM) "
            "or av.AudioFrame"
        )

    def pull(self, sink: _PcmSink) -> tuple[bytes, bool]:
        """Up to ``batch`` items as PCM, and whether more may follow. Runs in a worker."""
        with self._lock:
            parts: list[bytes] = []
            for _ in range(self._batch):
                if self._closed:
                    return b"".join(parts), False
                try:
                    item = next(self._items)
                except StopIteration:
                    parts.append(sink.flush())
                    return b"".join(parts), False
                frame = self._to_frame(item)
                if frame is not None:
                    parts.append(sink.push(frame))
            return b"".join(parts), True

    async def pump(self, take: _PcmTarget) -> None:
        from perso_sync._runtime import run_sync_off_loop

        while True:
            pcm, more = await run_sync_off_loop(self.pull, take.sink)
            if pcm and not take.add(pcm):
                return
            if not more:
                return
            await take.wait_for_room()

    def _close_locked(self) -> None:
        with self._lock:
            self._closed = True
            on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    async def close(self) -> None:
        self._closed = True  # a worker still pulling stops at its next item
        if self._on_close is not None:
            from perso_sync._runtime import run_sync_off_loop

            await run_sync_off_loop(self._close_locked)

    def close_at_exit(self) -> None:
        self._closed = True  # no thread of ours to stop; FFmpeg frees the container with it


def _open_microphone(mic: Microphone) -> _TrackSource:
    av = _import_av()
    try:
        from aiortc.contrib.media import MediaPlayer
    except ImportError as exc:
        raise RecordingError(f"aiortc is needed to record from a microphone: {exc}") from exc
    attempts = mic._attempts()
    if not attempts:
        raise RecordingError(
            f"no default microphone on platform {sys.platform!r}: pass "
            "Microphone(device=..., format=...) (on Windows: device='audio=<name>', "
            "format='dshow')"
        )
    failures: list[str] = []
    open_errors: tuple[type[BaseException], ...] = (*_av_errors(), OSError)
    for device, input_format in attempts:
        label = f"{input_format or 'auto'}:{device}"
        if input_format is not None and input_format not in av.formats_available:
            failures.append(f"{label}: not in this FFmpeg build")
            continue
        try:
            player = MediaPlayer(
                device,
                format=input_format,
                options=dict(mic.options),
                timeout=MICROPHONE_OPEN_TIMEOUT,
            )
        except open_errors as exc:
            failures.append(f"{label}: {exc}")
            continue
        if player.audio is None:
            if player.video is not None:
                player.video.stop()
            failures.append(f"{label}: no audio stream")
            continue
        return _TrackSource(player.audio, player)
    raise RecordingError(
        "no microphone could be opened ("
        + "; ".join(failures)
        + "); record from a file, an iterable of PCM frames or an aiortc track instead"
    )


def _open_file(source: Any, pcm_rate: int, pcm_channels: int) -> _BlockingSource:
    av = _import_av()
    if isinstance(source, (str, os.PathLike)):
        target: Any = os.fspath(source)
        if not os.path.isfile(target):
            raise InvalidInputError(f"audio file not found: {target!r}")
        label = repr(target)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        target, label = io.BytesIO(bytes(source)), "the audio bytes"
    else:
        target, label = source, "the audio file object"
    try:
        container = av.open(target, mode="r")
    except _av_errors() as exc:
        raise AudioFormatError(f"cannot read {label} as audio: {exc}") from exc
    if not container.streams.audio:
        container.close()
        raise AudioFormatError(f"{label} has no audio stream")
    frames = container.decode(container.streams.audio[0])
    return _BlockingSource(
        frames,
        batch=_FILE_FRAMES_PER_PULL,
        pcm_rate=pcm_rate,
        pcm_channels=pcm_channels,
        on_close=container.close,
    )


def _open_source(source: object, pcm_rate: int, pcm_channels: int) -> _Source:
    if source is None:
        return _open_microphone(Microphone())
    if isinstance(source, Microphone):
        return _open_microphone(source)
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        return _open_file(source, pcm_rate, pcm_channels)
    if hasattr(source, "recv") and hasattr(source, "kind"):
        kind = source.kind
        if kind != "audio":
            raise InvalidInputError(f"the track to record is a {kind} track, not audio")
        return _TrackSource(source)
    if callable(getattr(source, "read", None)):
        return _open_file(source, pcm_rate, pcm_channels)
    if isinstance(source, Iterable):
        return _BlockingSource(iter(source), batch=1, pcm_rate=pcm_rate, pcm_channels=pcm_channels)
    raise InvalidInputError(
        "source must be None (the microphone), a Microphone, a path, audio bytes, a binary file "
        f"object, an aiortc audio track or an iterable of PCM frames; not {type(source).__name__}"
    )


class _Take:
    """One recording: the capture task's state, shared between the loop and user threads."""

    def __init__(
        self, source: _Source, sink: _PcmSink, channels: int, max_seconds: float | None
    ) -> None:
        self.source = source
        self.sink = sink
        self.channels = channels
        self.max_seconds = max_seconds
        self.lock = threading.Lock()
        self.pcm = bytearray()
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self.started = False  # the capture task runs (cancelling it is safe from now on)
        self.closing = False  # stop() was called: a task that has not started yet must not read
        self.sealed = False  # stop() took the audio: later samples are dropped
        self.future: Future[None] | None = None

    def _limit_bytes(self) -> int | None:
        if self.max_seconds is None or self.sink.rate is None:
            return None
        return round(self.max_seconds * self.sink.rate) * self.channels * 2

    def add(self, pcm: bytes) -> bool:
        """Keep ``pcm``; False once the take is full (``timeout`` seconds of audio) or sealed."""
        with self.lock:
            if self.sealed:
                return False
            limit = self._limit_bytes()
            if limit is None:
                self.pcm += pcm
                return True
            self.pcm += pcm[: max(0, limit - len(self.pcm))]
            return len(self.pcm) < limit

    async def wait_for_room(self) -> None:
        """A recording keeps everything it is given: there is always room."""

    async def run(self, wall_limit: float | None) -> None:
        import anyio

        with self.lock:
            skip = self.closing
            self.started = True
        try:
            if not skip:
                with anyio.move_on_after(math.inf if wall_limit is None else wall_limit):
                    await self.source.pump(self)
        except Exception as exc:  # noqa: BLE001 -- a failing source is reported by stop()
            with self.lock:
                self.error = exc
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await self.source.close()
            except Exception as exc:  # noqa: BLE001 -- reported by stop() like a capture error
                with self.lock:
                    self.error = self.error or exc
            finally:
                self.ended.set()

    def finish(self) -> tuple[bytes, int | None, BaseException | None]:
        """End the capture (bounded wait) and take the audio: (pcm, rate, error)."""
        with self.lock:
            self.closing = True
            cancel = self.started and not self.ended.is_set()
        if cancel and self.future is not None:
            self.future.cancel()
        # A task that had not started yet sees `closing`, closes its source and ends at once.
        self.ended.wait(STOP_TIMEOUT)
        with self.lock:
            self.sealed = True
            return bytes(self.pcm), self.sink.rate, self.error

    def abandon(self) -> None:
        """The recorder was garbage-collected while recording: end the capture, drop the audio.
        The capture task releases the source on the loop; nothing here blocks."""
        with self.lock:
            self.closing = True
            self.sealed = True
            cancel = self.started
        if cancel and self.future is not None:
            self.future.cancel()

    def _close_at_exit(self) -> None:
        with self.lock:
            self.closing = True
        if self.future is not None:
            self.future.cancel()
        self.source.close_at_exit()


class WavRecorder:
    """Records audio into a WAV file: the Python counterpart of the JS SDK's ``WavRecorder``.

    ``channels`` (1 or 2) and ``target_sample_rate`` (Hz; ``None`` keeps the rate of the first
    captured frame) fix the output: 16-bit PCM WAV. ::

        recorder = WavRecorder(target_sample_rate=16000)
        recorder.start()                      # the system microphone
        ...
        wav = recorder.stop()                 # bytes of a WAV file

        recorder.start("speech.mp3", timeout=5)  # the first 5 s of a file
        recorder.wait()                       # until the take is complete
        wav = recorder.stop()

    **Lifecycle.** :meth:`start` opens the source (errors surface there) and starts capturing on
    perso_sync's background loop. Capture ends by :meth:`stop`, by ``timeout``, or when the
    source ends; in the last two cases the audio waits for :meth:`stop`. A recorder holds one
    recording at a time: :meth:`is_recording` is True from :meth:`start` until :meth:`stop` —
    including while audio waits after a timeout, as the JS ``isSTTRecording()`` — and
    :meth:`start` then raises :class:`RecordingError`. :meth:`is_capturing` says whether audio is
    still coming in; :meth:`wait` blocks until it is not.

    **Threads.** Every method may be called from any thread except perso_sync's own loop thread
    (e.g. inside an async tool), where the blocking ones raise :class:`RuntimeUsageError`.
    ``start``/``stop`` are serialised by a lock: of two concurrent ``start`` calls one raises,
    of two ``stop`` calls one gets the audio and the other :class:`RecordingError`. Separate
    recorders record independently (a microphone may refuse a second opener).
    """

    def __init__(self, channels: int = 1, target_sample_rate: int | None = None) -> None:
        if channels not in (1, 2) or isinstance(channels, bool):
            raise InvalidInputError(f"channels must be 1 or 2, not {channels!r}")
        if target_sample_rate is not None:
            _check_rate(target_sample_rate)
        self.channels = channels
        self.target_sample_rate = target_sample_rate
        self._lock = threading.Lock()
        self._take: _Take | None = None
        self._abandon_on_gc: weakref.finalize[[], WavRecorder] | None = None
        self._starting = False

    def __repr__(self) -> str:
        state = "recording" if self.is_recording() else "idle"
        return (
            f"WavRecorder(channels={self.channels}, "
            f"target_sample_rate={self.target_sample_rate!r}, {state})"
        )

    @staticmethod
    def _runtime_off_loop(what: str) -> Any:
        from perso_sync._runtime import get_runtime

        runtime = get_runtime()
        if runtime.in_loop_thread():
            raise RuntimeUsageError(
                f"WavRecorder.{what}() blocks and cannot run on perso_sync's loop thread; "
                "call it from a worker thread"
            )
        return runtime

    def start(
        self,
        source: AudioSource | None = None,
        timeout: float | None = None,
        *,
        pcm_sample_rate: int = TTS_TARGET_SAMPLE_RATE,
        pcm_channels: int = 1,
    ) -> None:
        """Start recording from ``source``:

        * ``None`` — the system microphone (:class:`Microphone` with the platform default;
          :class:`RecordingError` when there is none), or a :class:`Microphone` for another
          device;
        * a path, the bytes of an audio file, or a binary file object — any format FFmpeg reads
          (WAV, MP3, OGG, FLAC, ...), decoded as fast as possible, not in real time;
        * an aiortc audio ``MediaStreamTrack`` — read until it ends (the track is not stopped);
        * an iterable of frames — ``av.AudioFrame`` objects, or ``bytes`` of 16-bit signed
          little-endian interleaved PCM at ``pcm_sample_rate`` Hz (default 16000) with
          ``pcm_channels`` channels (default 1). It is iterated in a worker thread, so it may
          block while waiting for audio.

        ``timeout`` (seconds) stops the capture by itself: the take keeps at most ``timeout``
        seconds of audio (exact for any source), and capture also ends ``timeout + 1`` s after
        start in wall time, for live sources that stall. The audio then waits for :meth:`stop`.

        Raises :class:`RecordingError` if already recording or the microphone cannot be opened,
        :class:`InvalidInputError` for a bad argument or missing file, :class:`AudioFormatError`
        for a file that is not audio.
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not math.isfinite(timeout) or timeout <= 0
        ):
            raise InvalidInputError(
                f"timeout must be a positive number of seconds, not {timeout!r}"
            )
        _check_rate(pcm_sample_rate)
        if pcm_channels not in (1, 2) or isinstance(pcm_channels, bool):
            raise InvalidInputError(f"pcm_channels must be 1 or 2, not {pcm_channels!r}")
        runtime = self._runtime_off_loop("start")
        with self._lock:
            if self._take is not None or self._starting:
                raise RecordingError("WavRecorder is already recording; call stop() first")
            self._starting = True
        try:
            opened = _open_source(source, pcm_sample_rate, pcm_channels)
            take = _Take(
                opened, _PcmSink(self.target_sample_rate, self.channels), self.channels, timeout
            )
            from perso_sync._runtime import register_closable

            register_closable(take)
            take.future = runtime.spawn(
                take.run, None if timeout is None else timeout + TIMEOUT_GRACE
            )
            with self._lock:
                self._take = take
                # A recorder dropped while recording must not keep a microphone open.
                self._abandon_on_gc = weakref.finalize(self, take.abandon)
        finally:
            with self._lock:
                self._starting = False

    def stop(self) -> bytes:
        """End the recording and return it as WAV bytes (16-bit PCM, ``channels`` channels).

        Works after a ``timeout`` or the end of the source too (the audio waited). Raises
        :class:`RecordingError` when not recording, or when the source failed mid-way (the
        cause is chained).
        """
        self._runtime_off_loop("stop")
        with self._lock:
            take, self._take = self._take, None
            finalizer, self._abandon_on_gc = self._abandon_on_gc, None
        if take is None:
            raise RecordingError("WavRecorder is not recording; call start() first")
        if finalizer is not None:
            finalizer.detach()
        pcm, rate, error = take.finish()
        if error is not None:
            raise RecordingError(f"recording failed: {error}") from error
        return encode_wav(
            pcm, rate or self.target_sample_rate or TTS_TARGET_SAMPLE_RATE, self.channels
        )

    def is_recording(self) -> bool:
        """True from :meth:`start` until :meth:`stop`, also while audio waits after a timeout."""
        with self._lock:
            return self._take is not None

    def is_capturing(self) -> bool:
        """True while audio is still coming in (not yet ended by timeout, source end or stop)."""
        with self._lock:
            take = self._take
        return take is not None and not take.ended.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until capture has ended by itself (timeout or source end); True if it has (or
        nothing is recording), False if ``timeout`` seconds passed first."""
        self._runtime_off_loop("wait")
        with self._lock:
            take = self._take
        return take is None or take.ended.wait(timeout)


def create_wav_recorder(channels: int = 1, target_sample_rate: int | None = None) -> WavRecorder:
    """A new :class:`WavRecorder` (the JS SDK's ``createWavRecorder``)."""
    return WavRecorder(channels=channels, target_sample_rate=target_sample_rate)


# =============================================================================================
# Sending: the outgoing audio of legacy voice chat

#: Sample rate of the outgoing voice-chat audio (Opus's own rate: aiortc encodes it unresampled).
UPLINK_SAMPLE_RATE: Final = 48000
#: Samples per outgoing frame (20 ms, the Opus frame aiortc sends).
_UPLINK_FRAME_SAMPLES: Final = 960
#: Seconds of decoded audio a fast source (a file) may run ahead of real time.
_UPLINK_AHEAD_SECONDS: Final = 1.0


class _UplinkFeed:
    """One source being played on the uplink. Loop-side, except :attr:`played`."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.sink = _PcmSink(UPLINK_SAMPLE_RATE, 1)
        self.played = threading.Event()  # the source ended and every sample went out (or stop)
        self.error: BaseException | None = None
        self._buffer = bytearray()
        self._limit = round(_UPLINK_AHEAD_SECONDS * UPLINK_SAMPLE_RATE) * 2
        self._ended = False  # the source has nothing more (ended, failed or stopped)
        self._stopped = False
        self._room: Any = None  # an anyio.Event while the pump waits for the reader

    def add(self, pcm: bytes) -> bool:
        if self._stopped:
            return False
        self._buffer += pcm
        return True

    async def wait_for_room(self) -> None:
        import anyio

        while len(self._buffer) > self._limit and not self._stopped:
            self._room = anyio.Event()
            await self._room.wait()

    def _wake(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def take(self, size: int) -> bytes | None:
        """The next ``size`` bytes (zero-padded at the very end), or None when none are ready."""
        if not self._buffer:
            if self._ended:
                self.played.set()
            return None
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        if len(self._buffer) <= self._limit:
            self._wake()
        if len(chunk) < size:
            chunk += bytes(size - len(chunk))
        if self._ended and not self._buffer:
            self.played.set()
        return chunk

    def stop(self) -> None:
        """Drop what is not sent yet; the pump stops at its next frame."""
        self._stopped = True
        self._ended = True
        self._buffer.clear()
        self._wake()
        self.played.set()

    async def run(self) -> BaseException | None:
        """Pump the source until it ends, fails or the feed stops, then close it. Returns None,
        or the exception with which the source failed (the track went silent then)."""
        import anyio

        try:
            await self.source.pump(self)
        except Exception as exc:  # noqa: BLE001 -- a failing source goes silent; play() says why
            self.error = exc
        except BaseException:  # cancelled (the session closes): nothing more goes out
            self.stop()
            raise
        finally:
            self._ended = True
            if not self._buffer:
                self.played.set()
            try:
                with anyio.CancelScope(shield=True):
                    await self.source.close()
            except Exception as exc:  # noqa: BLE001 -- kept like a capture error
                self.error = self.error or exc
        return self.error


class UplinkAudio:
    """The audio a WebRTC session sends to the server in legacy voice chat.

    The session makes one when opened with ``voice_chat=True``; its :meth:`track` goes into the
    SDP offer (a ``sendrecv`` audio section, as the official SDK's ``enableVoiceChat`` mode adds
    the microphone track). The track sends 20 ms frames of 48 kHz mono audio in real time:
    silence, except while a source plays (:meth:`play`, from ``start_voice_chat(source)``).
    A fast source (a file) is decoded at most ``_UPLINK_AHEAD_SECONDS`` ahead of what was sent.

    Loop-side: :meth:`track`, :meth:`play`, :meth:`stop`. Any thread: :meth:`wait_played`
    (the feed is in place when :meth:`play` returns, so a wait right after cannot miss it).
    """

    def __init__(self) -> None:
        self._feed: _UplinkFeed | None = None
        self._track: Any = None

    def track(self) -> MediaStreamTrack:
        """The outgoing aiortc audio track (made on first call, on the loop)."""
        if self._track is None:
            self._track = _uplink_track_class()(self)
        return cast("MediaStreamTrack", self._track)

    def next_frame_pcm(self) -> bytes:
        """The PCM of the next outgoing frame: the playing source's, else silence."""
        size = _UPLINK_FRAME_SAMPLES * 2
        feed = self._feed
        chunk = None if feed is None else feed.take(size)
        return bytes(size) if chunk is None else chunk

    def play(self, source: _Source) -> _UplinkFeed:
        """Play ``source`` from now on, replacing what played before. The caller runs the
        returned feed's ``run()`` in a task (cancelling it stops the playback); until then, and
        once it ran out, the track sends silence. A finished feed stays until replaced."""
        self.stop()
        feed = _UplinkFeed(source)
        self._feed = feed
        return feed

    def stop(self) -> None:
        """Back to silence at once (what the source still had is dropped)."""
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.stop()

    def wait_played(self, timeout: float | None = None) -> bool:
        """Block until the playing source has ended and all of it was sent; True at once when
        nothing plays, False after ``timeout`` seconds."""
        feed = self._feed
        return feed is None or feed.played.wait(timeout)

    def close(self) -> None:
        """Stop playing and end the track (its sender then stops)."""
        self.stop()
        if self._track is not None:
            self._track.stop()


_UPLINK_TRACK_CLASS: Any = None
_UPLINK_TRACK_LOCK = threading.Lock()


def _uplink_track_class() -> Any:
    """The aiortc track class of :class:`UplinkAudio`, made once (aiortc is imported late)."""
    global _UPLINK_TRACK_CLASS
    with _UPLINK_TRACK_LOCK:
        if _UPLINK_TRACK_CLASS is None:
            _UPLINK_TRACK_CLASS = _make_uplink_track_class()
        return _UPLINK_TRACK_CLASS


def _make_uplink_track_class() -> Any:
    import asyncio
    import fractions

    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    av = _import_av()
    rate = UPLINK_SAMPLE_RATE
    samples = _UPLINK_FRAME_SAMPLES
    time_base = fractions.Fraction(1, rate)

    class UplinkTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self, uplink: UplinkAudio) -> None:
            super().__init__()
            self._uplink = uplink
            self._start: float | None = None
            self._pts = 0

        async def recv(self) -> Any:
            if self.readyState != "live":
                raise MediaStreamError
            loop = asyncio.get_running_loop()
            if self._start is None:
                self._start = loop.time()
            else:
                # Real time: frame n goes out n * 20 ms after the first one.
                self._pts += samples
                delay = self._start + self._pts / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
            frame.planes[0].update(self._uplink.next_frame_pcm())
            frame.sample_rate = rate
            frame.pts = self._pts
            frame.time_base = time_base
            return frame

    return UplinkTrack


def open_audio_source(source: AudioSource | None) -> _Source:
    """Open ``source`` as :meth:`WavRecorder.start` does (``None`` = the system microphone), for
    :meth:`UplinkAudio.play`. Raises like ``start``: :class:`RecordingError`,
    :class:`InvalidInputError`, :class:`AudioFormatError`."""
    return _open_source(source, TTS_TARGET_SAMPLE_RATE, 1)
