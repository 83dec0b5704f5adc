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

from perso_sync._audio_input import (
    PcmAudio,
    read_audio_input,
    read_wav,
    resample_wav,
    to_stt_wav,
)
from perso_sync._audio_sources import (
    MICROPHONE_OPEN_TIMEOUT as MICROPHONE_OPEN_TIMEOUT,
)
from perso_sync._audio_sources import (
    AudioSource,
    Microphone,
)
from perso_sync._audio_sources import (
    open_audio_source as open_audio_source,
)
from perso_sync._uplink_audio import UPLINK_SAMPLE_RATE as UPLINK_SAMPLE_RATE
from perso_sync._uplink_audio import UplinkAudio as UplinkAudio
from perso_sync._wav import (
    TTS_TARGET_SAMPLE_RATE,
    AudioFormat,
    WavInfo,
    encode_wav,
    get_wav_sample_rate,
    normalize_audio_format,
    read_wav_info,
    sniff_audio_format,
)
from perso_sync._wav_recorder import (
    STOP_TIMEOUT as STOP_TIMEOUT,
)
from perso_sync._wav_recorder import (
    TIMEOUT_GRACE as TIMEOUT_GRACE,
)
from perso_sync._wav_recorder import (
    WavRecorder,
    create_wav_recorder,
)

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
