"""The ``file`` data channel of the mock's WebRTC peer (docs/PROTOCOL.md §8): one transfer per
channel (empty "ready" text, binary chunks, empty binary EOF, then one text answer with a new
``file_ref``); a size limit and malformed transfers close the channel. Completed uploads are
kept as :class:`FileInfo` for the ``stf`` message that speaks them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import uuid
import wave
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import av
from aiortc import RTCDataChannel

logger = logging.getLogger("mock_server.webrtc")

FILE_LABEL = "file"

#: ``journal(channel label, direction, payload)``: the peer's journal callback.
JournalCallback = Callable[[str, str, Any], None]


class UploadSettings(Protocol):
    """The knobs of a peer's config an upload reads (live: a change applies at once)."""

    max_file_size: int
    stall_file_channel: bool


@attrs.define
class FileInfo:
    """One completed upload on a ``file`` channel."""

    file_ref: str
    size: int
    sha256: str
    data: bytes = attrs.field(repr=False)
    format: str | None = None
    """The format hint of the ``stf`` that used the file (unknown until then)."""

    def audio_duration_ms(self) -> float | None:
        """The audio's length in ms if the file is a WAV or a format PyAV can read, else None."""
        try:
            with wave.open(io.BytesIO(self.data)) as reader:
                rate = reader.getframerate()
                if rate > 0:
                    return 1000.0 * float(reader.getnframes()) / float(rate)
        except (wave.Error, EOFError):
            pass
        try:
            with av.open(io.BytesIO(self.data)) as container:
                if container.duration:
                    return float(container.duration) / 1000.0  # AV_TIME_BASE: microseconds
        except (av.FFmpegError, ValueError, OSError):
            pass
        return None


class Upload:
    """One transfer on a ``file`` channel: ready → binary chunks → empty EOF → file_ref.

    A completed file lands in ``files`` (the peer's ``file_ref`` → :class:`FileInfo`).
    """

    def __init__(
        self,
        channel: RTCDataChannel,
        *,
        session_id: str,
        settings: UploadSettings,
        files: dict[str, FileInfo],
        journal: JournalCallback,
    ) -> None:
        self._channel = channel
        self._session_id = session_id
        self._settings = settings
        self._files = files
        self._journal = journal
        self._chunks: list[bytes] = []
        self._digest = hashlib.sha256()
        self._size = 0
        self._done = False
        self._rejected = False

    def ready(self) -> None:
        self._channel.send("")
        self._journal(FILE_LABEL, "out", "")

    def receive(self, raw: str | bytes) -> None:
        if self._rejected:
            return  # still in flight while the channel closes
        if self._done:
            self._reject("message after end of file")
        elif isinstance(raw, str):
            self._reject("text message where binary data was expected")
        elif raw:
            self._size += len(raw)
            if self._size > self._settings.max_file_size:
                self._reject(f"file larger than {self._settings.max_file_size} bytes")
                return
            self._chunks.append(raw)
            self._digest.update(raw)
        elif self._size == 0:
            self._reject("empty file")
        else:
            self._complete()

    def _complete(self) -> None:
        self._done = True
        info = FileInfo(
            file_ref=f"file-{uuid.uuid4().hex}",
            size=self._size,
            sha256=self._digest.hexdigest(),
            data=b"".join(self._chunks),
        )
        self._chunks.clear()
        self._files[info.file_ref] = info
        self._journal(
            FILE_LABEL, "in", {"file_ref": info.file_ref, "size": info.size, "sha256": info.sha256}
        )
        if self._settings.stall_file_channel:
            logger.info("session %s: stalling upload %s", self._session_id, info.file_ref)
            return
        if self._channel.readyState == "open":
            self._channel.send(info.file_ref)
            self._journal(FILE_LABEL, "out", info.file_ref)

    def _reject(self, reason: str) -> None:
        self._done = self._rejected = True
        self._chunks.clear()
        self._journal(FILE_LABEL, "in", {"error": reason, "size": self._size})
        logger.info("session %s: upload rejected: %s", self._session_id, reason)
        if self._channel.readyState in ("connecting", "open"):
            self._channel.close()
