"""Audio the caller hands over, on the caller's thread: PyAV decoding and resampling
(:class:`PcmAudio`, :func:`read_wav`, :func:`resample_wav`, :func:`to_stt_wav`), reading an
input (:func:`read_audio_input`) and the STF upload source (:func:`open_upload_source`).

PyAV is imported inside the functions that need it, so importing this module never loads FFmpeg.
Public names are re-exported by :mod:`perso_sync.audio`.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

import attrs

from perso_sync._wav import (
    TTS_TARGET_SAMPLE_RATE,
    WavInfo,
    check_sample_rate,
    encode_wav,
    get_wav_sample_rate,
    is_riff_wave,
    read_wav_info,
)
from perso_sync.errors import AudioFormatError, InvalidInputError, STFError

if TYPE_CHECKING:
    import av

# Samples per frame when we hand PCM to PyAV: bounds the copies made for a long file.
_SAMPLES_PER_FRAME = 65536
#: Bytes read from an STF file to sniff its type (RIFF / ID3 / MP3 frame sync).
_SNIFF_BYTES = 16


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


def import_av() -> Any:
    try:
        import av
    except ImportError as exc:  # aiortc depends on av, so this means a broken install
        raise AudioFormatError(
            f"PyAV (the 'av' package) is needed for audio decoding: {exc}"
        ) from exc
    return av


def av_errors() -> tuple[type[BaseException], ...]:
    av = import_av()
    # InvalidDataError & co. derive from FFmpegError; PyAV raises ValueError for frames that do
    # not fit a resampler or a plane.
    return (av.FFmpegError, ValueError)


def _layout_name(channels: int) -> str:
    # FFmpeg knows mono/stereo by name; "<n>c" is its default layout for n channels, which the
    # resampler can downmix.
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def frame_from_pcm(pcm: bytes, sample_format: str, channels: int, rate: int) -> av.AudioFrame:
    av = import_av()
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


class PcmSink:
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
        av = import_av()
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
        yield frame_from_pcm(pcm, sample_format, info.channels, info.sample_rate)


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
    sink = PcmSink(rate, 1)
    try:
        return b"".join(sink.push(frame) for frame in _wav_frames(info, data)) + sink.flush()
    except av_errors() as exc:
        raise AudioFormatError(f"cannot {doing} the WAV samples: {exc}") from exc


def _decode_with_av(source: Any, rate: int | None, channels: int) -> PcmAudio:
    """Decode the first audio stream of anything FFmpeg reads (bytes-like wrapped, path, file)."""
    av = import_av()
    errors = av_errors()
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
        sink = PcmSink(rate, channels)
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


def resample_wav(data: bytes | bytearray | memoryview, rate: int = TTS_TARGET_SAMPLE_RATE) -> bytes:
    """Convert WAV or MP3 (or anything FFmpeg decodes) to a 16-bit mono PCM WAV at ``rate`` Hz.

    PCM/float WAVs are read by :func:`read_wav_info` (any chunk order, 8–32-bit, stereo mixed
    down); other data is decoded by FFmpeg. Resampling is FFmpeg's (``av.AudioResampler``), so
    the duration is kept to within a few samples. Raises :class:`AudioFormatError` when the data
    cannot be decoded (``process_tts`` then keeps the original bytes).
    """
    check_sample_rate(rate)
    if is_riff_wave(data):
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
    if is_riff_wave(data):
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


class _PrefixedReader(io.RawIOBase):
    """A non-seekable binary stream with its first bytes already read: replays them first."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._rest.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _empty_stf_file(message: str) -> STFError:
    return STFError(message, AudioFormatError(message))


@contextlib.contextmanager
def open_upload_source(
    file: bytes | str | os.PathLike[str] | BinaryIO,
) -> Iterator[tuple[BinaryIO, bytes, int | None]]:
    """(reader, first bytes, total size or None) of an STF upload source; closes what it
    opened."""
    if isinstance(file, (bytes, bytearray, memoryview)):
        data = bytes(file)
        if not data:
            raise _empty_stf_file("the STF file is empty")
        yield io.BytesIO(data), data[:_SNIFF_BYTES], len(data)
        return
    if isinstance(file, (str, os.PathLike)):
        path = os.fspath(file)
        try:
            handle = open(path, "rb")  # noqa: SIM115 -- closed by the with block below
        except OSError as exc:
            raise InvalidInputError(f"cannot open the STF file {path!r}: {exc}") from exc
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise _empty_stf_file(f"the STF file {path!r} is empty")
            head = handle.read(_SNIFF_BYTES)
            handle.seek(0)
            yield cast(BinaryIO, handle), head, size
        return
    read = getattr(file, "read", None)
    if not callable(read):
        raise InvalidInputError(
            f"file must be bytes, a path or a binary file object, not {type(file).__name__}"
        )
    seekable = getattr(file, "seekable", None)
    if callable(seekable) and seekable():
        start = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(start)
        head = file.read(_SNIFF_BYTES)
        file.seek(start)
        if not isinstance(head, (bytes, bytearray)):
            raise InvalidInputError("file must be opened in binary mode")
        yield file, bytes(head), max(0, end - start)
        return
    head = _read_head(read)
    yield cast(BinaryIO, _PrefixedReader(head, file)), head, None


def _read_head(read: Any) -> bytes:
    """The first ``_SNIFF_BYTES`` of a stream that cannot seek (fewer only at its end).

    A pipe or socket may hand out a byte or two per read; sniffing the format from a short head
    would label an MP3 as WAV (its frame sync needs two bytes).
    """
    head = b""
    while len(head) < _SNIFF_BYTES:
        part = read(_SNIFF_BYTES - len(head))
        if not isinstance(part, (bytes, bytearray)):
            raise InvalidInputError("file must be opened in binary mode")
        if not part:
            break
        head += part
    return head
