"""Audio: WAV headers, format sniffing, resampling and recording, with PyAV doing the DSP.

This is the public audio module: every name below is importable from here (``__all__`` lists
the documented ones). The code lives in five private modules, one concern and one threading
story each (docs/PROTOCOL.md §8 and §10):

* :mod:`perso_sync._wav` — **sans-IO** (no PyAV, no threads, no files): WAV facts
  (:func:`get_wav_sample_rate`, :func:`read_wav_info`, which walks the RIFF chunk list, so
  ``LIST``/``JUNK`` chunks before ``fmt `` are fine; :func:`encode_wav`), format names
  (:func:`sniff_audio_format` from the first bytes, :func:`normalize_audio_format`:
  ``"audio/x-wav; codecs=1"`` → ``"wav"``) and :data:`TTS_TARGET_SAMPLE_RATE`.
* :mod:`perso_sync._audio_input` — PyAV decoding on the **caller's thread**: :func:`read_wav`
  (PCM 8/16/24/32-bit or float, mixed down to 16-bit mono), :func:`resample_wav` (any WAV or
  MP3 → 16-bit mono PCM WAV at a given rate), :func:`to_stt_wav` (what the STT endpoint gets:
  WAV as is, MP3/OGG/FLAC/... converted), :func:`read_audio_input` (bytes, a path or a binary
  file object → bytes) and the STF upload source of ``Session.process_stf``.
* :mod:`perso_sync._audio_sources` — what can be recorded or played (:class:`Microphone`, a
  file, an iterable of PCM frames, an aiortc track; :data:`AudioSource`), pumped by a task on
  the **runtime loop**, blocking iterators and FFmpeg in **worker threads**.
* :mod:`perso_sync._wav_recorder` — :class:`WavRecorder` / :func:`create_wav_recorder`: the
  **caller's thread** starts and stops a take, a capture task on the runtime loop fills it.
* :mod:`perso_sync._uplink_audio` — :class:`UplinkAudio`, **loop side**: the outgoing audio
  track of a session opened with ``voice_chat=True`` (legacy voice chat): silence, or any of the
  sources above played in real time while voice chat records.

PyAV (which aiortc brings) is imported inside the functions that need it, so importing this
module — or ``perso_sync`` — never loads FFmpeg. Every failure is a :mod:`perso_sync.errors`
exception: :class:`AudioFormatError` for data that is not (readable) audio,
:class:`InvalidInputError` for a wrong argument, :class:`RecordingError` for recorder misuse or a
microphone that cannot be opened.
"""

from __future__ import annotations

from perso_sync._audio_input import PcmAudio, read_audio_input, read_wav, resample_wav, to_stt_wav
from perso_sync._audio_sources import AudioSource, Microphone
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
from perso_sync._wav_recorder import WavRecorder, create_wav_recorder

# isort: split
# Importable from here too but not documented: what the session uses for voice chat, and the
# recorder's timing constants (module attributes of this module before the split).
from perso_sync._audio_sources import MICROPHONE_OPEN_TIMEOUT as MICROPHONE_OPEN_TIMEOUT
from perso_sync._audio_sources import open_audio_source as open_audio_source
from perso_sync._uplink_audio import UPLINK_SAMPLE_RATE as UPLINK_SAMPLE_RATE
from perso_sync._uplink_audio import UplinkAudio as UplinkAudio
from perso_sync._wav_recorder import STOP_TIMEOUT as STOP_TIMEOUT
from perso_sync._wav_recorder import TIMEOUT_GRACE as TIMEOUT_GRACE

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
