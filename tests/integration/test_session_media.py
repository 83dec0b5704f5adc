"""Session media: TTS, STT, STT recording, STF upload, legacy voice chat, the avatar's frames
and recording (public API, mock server, real WebRTC)."""

from __future__ import annotations

import hashlib
import io
import os
import wave
from pathlib import Path
from typing import Any

import _session_helpers as helpers
import av
import pytest
from _session_helpers import HEIGHT, IDLE, WIDTH, Recorder, StateRecorder, wait_sent, wait_until

import perso_sync
from perso_sync.models import ChatState

client = helpers.client
open_session = helpers.open_session

TEXT = "Hello from the speech round trip."


def _wav_info(data: bytes) -> tuple[int, int, int, float]:
    with wave.open(io.BytesIO(data)) as reader:
        rate = reader.getframerate()
        return rate, reader.getnchannels(), reader.getsampwidth(), reader.getnframes() / rate


def _rest_only(perso_mock: Any, client: Any) -> Any:
    sid = perso_mock.create_session_id(using_stf_webrtc=False)
    return client.create_session(sid, width=WIDTH, height=HEIGHT)


@pytest.fixture
def rest_session(perso_mock: Any, client: Any) -> Any:
    """A REST-only session: TTS and STT need no WebRTC, and it opens fast."""
    session = _rest_only(perso_mock, client)
    yield session
    session.stop_session()


# ------------------------------------------------------------------------------------ TTS


def test_tts_stt_round_trip_returns_the_original_text(rest_session: Any) -> None:
    states = StateRecorder()
    rest_session.subscribe_chat_states(states)

    audio = rest_session.process_tts(TEXT)

    assert audio[:4] == b"RIFF"
    assert rest_session.transcribe_audio(audio) == TEXT
    states.wait_for(lambda calls: calls == [{ChatState.TTS}, IDLE])


def test_tts_appends_a_full_stop_and_strips_emoji(perso_mock: Any, rest_session: Any) -> None:
    rest_session.process_tts("  Hi there 😀  ")
    rest_session.process_tts("Really?")
    assert [r.body["text"] for r in perso_mock.journal.requests(endpoint="tts")] == [
        "Hi there.",
        "Really?",
    ]


def test_tts_of_nothing_sends_no_request(perso_mock: Any, rest_session: Any) -> None:
    assert rest_session.process_tts(" 🎉 ") is None
    assert perso_mock.journal.requests(endpoint="tts") == []


def test_resampled_tts_is_16khz_mono_16bit_with_the_same_duration(rest_session: Any) -> None:
    original = rest_session.process_tts(TEXT)
    resampled = rest_session.process_tts(TEXT, resample=True)

    rate, channels, width, duration = _wav_info(resampled)
    assert (rate, channels, width) == (16000, 1, 2)
    assert duration == pytest.approx(_wav_info(original)[3], rel=0.01)


def test_mp3_tts_is_sniffed_and_resampled(rest_session: Any) -> None:
    mp3 = rest_session.process_tts(TEXT, output_format="mp3")
    assert mp3[:3] == b"ID3" or (mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0)

    resampled = rest_session.process_tts(TEXT, output_format="mp3", resample=True)
    assert _wav_info(resampled)[:3] == (16000, 1, 2)


def test_invalid_base64_is_a_tts_decode_error(perso_mock: Any, rest_session: Any) -> None:
    errors = Recorder()
    rest_session.set_error_handler(errors)
    perso_mock.faults.fail("tts", 200, body={"audio": "%%% not base64 %%%"})

    with pytest.raises(perso_sync.TTSError) as raised:
        rest_session.process_tts(TEXT)

    assert isinstance(raised.value.underlying_error, perso_sync.TTSDecodeError)
    assert "Invalid Base64 audio data" in str(raised.value)
    errors.wait_count(1)
    assert errors.calls == [raised.value]
    assert rest_session.chat_states == IDLE


def test_tts_server_error_is_a_tts_error(perso_mock: Any, rest_session: Any) -> None:
    perso_mock.faults.fail("tts", 500)
    with pytest.raises(perso_sync.TTSError) as raised:
        rest_session.process_tts(TEXT)
    assert isinstance(raised.value.underlying_error, perso_sync.ApiError)
    assert raised.value.underlying_error.error_code == 500
    assert rest_session.chat_states == IDLE


# ------------------------------------------------------------------------------------ STT


def test_stt_of_a_path_bytes_and_a_file_object(rest_session: Any, tmp_path: Path) -> None:
    audio = rest_session.process_tts(TEXT)
    path = tmp_path / "speech.wav"
    path.write_bytes(audio)

    assert rest_session.transcribe_audio(path, language="en") == TEXT
    assert rest_session.transcribe_audio(str(path)) == TEXT
    assert rest_session.transcribe_audio(audio) == TEXT
    with path.open("rb") as file:
        detailed = rest_session.transcribe_audio_detailed(file, language="en")
    assert detailed.text == TEXT
    assert detailed.locale == "en"


def test_stt_of_an_mp3_is_converted_to_wav_first(perso_mock: Any, rest_session: Any) -> None:
    mp3 = rest_session.process_tts(TEXT, output_format="mp3")

    assert rest_session.transcribe_audio(mp3) == TEXT

    upload = perso_mock.journal.requests(endpoint="stt")[-1].body["files"]["audio"]
    assert upload["filename"] == "audio.wav"


def test_non_audio_is_refused_without_a_request(perso_mock: Any, rest_session: Any) -> None:
    errors = Recorder()
    rest_session.set_error_handler(errors)

    with pytest.raises(perso_sync.STTError) as raised:
        rest_session.transcribe_audio(b"this is certainly not audio" * 20)

    assert isinstance(raised.value.underlying_error, perso_sync.AudioFormatError)
    assert perso_mock.journal.requests(endpoint="stt") == []
    errors.wait_count(1)
    assert errors.calls == [raised.value]


@pytest.mark.parametrize(
    "wav",
    [
        b"RIFF\x10\x00\x00\x00WAVE",  # header cut short: no fmt chunk
        b"RIFF\x24\x00\x00\x00WAVEdata\x04\x00\x00\x00\x00\x00\x00\x00",  # no fmt
        b"RIFF\x24\x00\x00\x00WAVEfmt \x02\x00\x00\x00\x01\x00",  # fmt too short
    ],
    ids=["short", "no-fmt", "short-fmt"],
)
def test_malformed_wav_is_an_stt_error_with_the_format_error_under_it(
    perso_mock: Any, rest_session: Any, wav: bytes
) -> None:
    with pytest.raises(perso_sync.STTError) as raised:
        rest_session.transcribe_audio_detailed(wav)

    cause = raised.value.underlying_error
    assert isinstance(cause, perso_sync.AudioFormatError)
    # The message still says what is wrong with the audio.
    assert str(raised.value) == f"STT Error: {cause}"
    assert "WAV" in str(cause) or "fmt" in str(cause)
    assert perso_mock.journal.requests(endpoint="stt") == []


def test_stt_of_a_missing_file_is_an_input_error(rest_session: Any, tmp_path: Path) -> None:
    # A wrong argument is not a failed transcription: it keeps its own class.
    with pytest.raises(perso_sync.InvalidInputError, match="not found"):
        rest_session.transcribe_audio(tmp_path / "nowhere.wav")


def test_stt_recording_from_a_non_audio_file_is_an_stt_error(
    rest_session: Any, tmp_path: Path
) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"certainly not audio\n" * 50)
    errors = Recorder()
    rest_session.set_error_handler(errors)

    with pytest.raises(perso_sync.STTError) as raised:
        rest_session.start_process_stt(source=str(source))

    assert isinstance(raised.value.underlying_error, perso_sync.AudioFormatError)
    assert not rest_session.is_stt_recording()
    assert rest_session.chat_states == frozenset()
    errors.wait_count(1)
    assert errors.calls == [raised.value]


def test_stt_400_is_an_stt_error_with_the_server_detail(perso_mock: Any, rest_session: Any) -> None:
    errors = Recorder()
    rest_session.set_error_handler(errors)
    body = {
        "type": "client_error",
        "errors": [{"code": "invalid_audio", "detail": "Audio is too short.", "attr": "audio"}],
    }
    perso_mock.faults.fail("stt", 400, body=body)
    audio = rest_session.process_tts(TEXT)

    with pytest.raises(perso_sync.STTError) as raised:
        rest_session.transcribe_audio(audio)

    assert raised.value.underlying_error.error_code == 400
    assert raised.value.underlying_error.detail == "Audio is too short."
    assert "Audio is too short." in str(raised.value)
    errors.wait_count(1)
    assert errors.calls == [raised.value]


def test_stt_recording_from_a_wav_source_with_a_timeout(rest_session: Any, tmp_path: Path) -> None:
    source = tmp_path / "voice.wav"
    source.write_bytes(rest_session.process_tts(TEXT))
    states = StateRecorder()
    rest_session.subscribe_chat_states(states)

    with pytest.raises(perso_sync.RecordingError, match="has not been started"):
        rest_session.stop_process_stt()
    rest_session.start_process_stt(timeout=0.3, source=str(source))
    with pytest.raises(perso_sync.RecordingError):
        rest_session.start_process_stt(source=str(source))

    # The timeout stops recording by itself; the audio waits for stop_process_stt.
    states.wait_for(lambda calls: calls == [{ChatState.RECORDING}, IDLE])
    assert rest_session.is_stt_recording()
    text = rest_session.stop_process_stt(language="en")

    assert isinstance(text, str)
    assert text
    assert not rest_session.is_stt_recording()
    recorded = rest_session.last_recorded_audio_file
    assert _wav_info(recorded)[:3] == (16000, 1, 2)
    # A file source decodes faster than real time: the take still holds `timeout` s of audio.
    assert _wav_info(recorded)[3] == pytest.approx(0.3, abs=0.01)
    with pytest.raises(perso_sync.RecordingError, match="not in progress"):
        rest_session.stop_process_stt()


def test_a_recording_source_that_fails_is_an_stt_error(rest_session: Any) -> None:
    errors = Recorder()
    rest_session.set_error_handler(errors)

    def frames() -> Any:
        raise OSError("device unplugged")
        yield b""  # a generator: it fails when first read

    # The timeout stops the take by itself; the source failed long before: the error is
    # reported then, and stop_process_stt raises it.
    rest_session.start_process_stt(timeout=1.0, source=frames())
    errors.wait_count(1)
    with pytest.raises(perso_sync.STTError) as raised:
        rest_session.stop_process_stt()

    assert errors.calls == [raised.value]
    assert isinstance(raised.value.underlying_error, perso_sync.RecordingError)
    assert "device unplugged" in str(raised.value)
    assert not rest_session.is_stt_recording()
    with pytest.raises(perso_sync.RecordingError, match="not been started"):
        rest_session.stop_process_stt()


# ------------------------------------------------------------------------------------ STF


def _wav_file(path: Path, size: int) -> bytes:
    """A valid 16 kHz mono WAV of about ``size`` bytes with varied samples."""
    frames = os.urandom(size - 44)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(frames)
    data = buffer.getvalue()
    path.write_bytes(data)
    return data


def test_stf_upload_of_5_mb_is_byte_exact_with_progress(
    perso_mock: Any, open_session: Any, tmp_path: Path
) -> None:
    session = open_session()
    path = tmp_path / "speech.wav"
    data = _wav_file(path, 5 * 1024 * 1024)
    progress = Recorder()
    states = StateRecorder()
    session.subscribe_chat_states(states)

    file_ref = session.process_stf(path, message="lip sync", progress=progress)

    sid = session.session_id
    received = perso_mock.journal.last(session_id=sid, channel="file", direction="in")
    assert received.payload == {
        "file_ref": file_ref,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert wait_sent(perso_mock, sid, "stf") == [
        {"message": "lip sync", "file_ref": file_ref, "format": "wav"}
    ]
    sent = [call[0] for call in progress.snapshot()]
    assert sent == sorted(sent)
    assert progress.snapshot()[-1] == (len(data), len(data))
    states.wait_for(lambda calls: calls[:2] == [{ChatState.ANALYZING}, {ChatState.SPEAKING}])


def test_stf_format_falls_back_to_the_files_own_type(
    perso_mock: Any, open_session: Any, rest_session: Any
) -> None:
    session = open_session()
    mp3 = rest_session.process_tts(TEXT, output_format="mp3")

    session.process_stf(io.BytesIO(mp3), format="application/octet-stream")
    session.process_stf(mp3, format="audio/x-wav; codecs=1")

    formats = [d["format"] for d in wait_sent(perso_mock, session.session_id, "stf", 2)]
    assert formats == ["mp3", "wav"]


def test_stf_failure_lowers_analyzing_again(perso_mock: Any, open_session: Any) -> None:
    session = open_session()
    perso_mock.peer(session.session_id).config.max_file_size = 1000
    errors = Recorder()
    session.set_error_handler(errors)

    with pytest.raises(perso_sync.STFError):
        session.process_stf(b"RIFF" + bytes(5000))

    assert session.chat_states == IDLE
    errors.wait_count(1)


def test_an_empty_stf_file_is_an_stf_error(
    perso_mock: Any, open_session: Any, tmp_path: Path
) -> None:
    session = open_session()
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    errors = Recorder()
    session.set_error_handler(errors)

    for source in (b"", empty):
        with pytest.raises(perso_sync.STFError, match="empty") as raised:
            session.process_stf(source)
        assert isinstance(raised.value.underlying_error, perso_sync.AudioFormatError)

    errors.wait_count(2)
    assert perso_mock.journal.messages(session_id=session.session_id, channel="file") == []
    assert session.chat_states == frozenset()


def test_stf_requires_webrtc(rest_session: Any) -> None:
    with pytest.raises(perso_sync.STFError, match=r"processSTF requires WebRTC \(STF mode\)"):
        rest_session.process_stf(b"RIFF")


# ---------------------------------------------------------------------- legacy voice chat


def test_legacy_voice_chat_sends_the_transcript_to_process_chat(
    perso_mock: Any, open_session: Any
) -> None:
    session = open_session()
    sid = session.session_id
    states = StateRecorder()
    session.subscribe_chat_states(states)

    with pytest.warns(DeprecationWarning, match="start_process_stt"):
        session.start_voice_chat()
    with pytest.warns(DeprecationWarning, match="stop_process_stt"):
        session.stop_voice_chat(language="en")

    perso_mock.journal.wait_for(endpoint="llm", session_id=sid, timeout=5)
    assert wait_sent(perso_mock, sid, "record-start") == [{}]
    assert wait_sent(perso_mock, sid, "record-end-stt") == [{"language": "en"}]
    llm = perso_mock.journal.requests(endpoint="llm", session_id=sid)[0]
    assert llm.body["messages"][-1]["content"] == "hello from the microphone"
    assert states.snapshot()[:3] == [
        {ChatState.RECORDING},
        {ChatState.RECORDING, ChatState.ANALYZING},
        {ChatState.ANALYZING},
    ]


def test_legacy_voice_chat_with_an_stt_callback(perso_mock: Any, open_session: Any) -> None:
    session = open_session()
    texts = Recorder()
    session.set_stt_result_callback(texts)

    with pytest.warns(DeprecationWarning, match="start_process_stt"):
        session.start_voice_chat()
    with pytest.warns(DeprecationWarning, match="stop_process_stt"):
        session.stop_voice_chat()

    texts.wait_count(1)
    assert texts.calls == ["hello from the microphone"]
    assert session.wait_until_idle(timeout=5)
    assert perso_mock.journal.requests(endpoint="llm") == []


VOICE = "Please book a table for two at seven tonight."


def _sdp_audio_direction(sdp: str) -> str:
    audio = sdp.split("m=audio", 1)[1].split("m=", 1)[0]
    (direction,) = [
        line[2:]
        for line in audio.splitlines()
        if line in ("a=sendrecv", "a=recvonly", "a=sendonly", "a=inactive")
    ]
    return direction


def test_voice_chat_sends_real_audio_that_the_server_transcribes(
    perso_mock: Any, open_session: Any, rest_session: Any
) -> None:
    session = open_session(voice_chat=True)
    sid = session.session_id
    texts = Recorder()
    session.set_stt_result_callback(texts)
    # The offer carries our audio track, as the official SDK's enableVoiceChat mode does.
    assert _sdp_audio_direction(perso_mock.sessions[sid].client_sdp) == "sendrecv"
    # A clip of the mock's own voice, synthesized for this session (the mock's STT knows it).
    clip = session.process_tts(VOICE)
    assert rest_session.transcribe_audio(clip) == VOICE  # the same clip, by REST

    with pytest.warns(DeprecationWarning, match="deprecated"):
        session.start_voice_chat(source=clip)
    assert session.chat_states == {ChatState.RECORDING}
    assert session.wait_voice_chat_sent(timeout=15)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        session.stop_voice_chat()

    texts.wait_count(1, timeout=10)
    assert texts.calls == [VOICE]
    peer = perso_mock.peer(sid)
    # What the server heard between record-start and record-end-stt is the clip's voice.
    (voiced,) = peer.takes
    assert voiced == pytest.approx(len(VOICE) * 0.06, abs=0.1)
    assert perso_mock.journal.requests(endpoint="stt", session_id=sid) == []
    assert session.wait_until_idle(timeout=5)


def test_voice_chat_turns_each_play_their_own_source(
    perso_mock: Any, open_session: Any, tmp_path: Path
) -> None:
    session = open_session(voice_chat=True)
    texts = Recorder()
    session.set_stt_result_callback(texts)
    short = tmp_path / "short.wav"
    short.write_bytes(session.process_tts("Yes."))
    long = session.process_tts("No thank you, that will be all for today.", output_format="mp3")

    for source in (str(short), io.BytesIO(long)):
        with pytest.warns(DeprecationWarning, match="deprecated"):
            session.start_voice_chat(source=source)
        with (
            pytest.warns(DeprecationWarning, match="deprecated"),
            pytest.raises(perso_sync.RecordingError, match="already recording"),
        ):
            session.start_voice_chat(source=str(short))
        assert session.wait_voice_chat_sent(timeout=15)
        with pytest.warns(DeprecationWarning, match="deprecated"):
            session.stop_voice_chat()

    texts.wait_count(2, timeout=10)
    assert texts.calls == ["Yes.", "No thank you, that will be all for today."]


def test_voice_chat_of_silence_gets_the_servers_default_answer(
    perso_mock: Any, open_session: Any
) -> None:
    session = open_session(voice_chat=True)
    texts = Recorder()
    session.set_stt_result_callback(texts)

    with pytest.warns(DeprecationWarning, match="deprecated"):
        session.start_voice_chat(source=[bytes(6400)])  # 0.2 s of 16 kHz silence
    assert session.wait_voice_chat_sent(timeout=10)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        session.stop_voice_chat()

    texts.wait_count(1, timeout=10)
    assert texts.calls == ["hello from the microphone"]
    assert perso_mock.peer(session.session_id).takes == [0.0]


def test_a_voice_chat_source_that_breaks_off_is_an_stt_error(open_session: Any) -> None:
    session = open_session(voice_chat=True)
    errors = Recorder()
    session.set_error_handler(errors)

    def microphone() -> Any:
        yield bytes(3200)  # 0.1 s, then the device fails
        raise OSError("device unplugged")

    with pytest.warns(DeprecationWarning, match="deprecated"):
        session.start_voice_chat(source=microphone())
    errors.wait_count(1)
    assert isinstance(errors.calls[0], perso_sync.STTError)
    assert isinstance(errors.calls[0].underlying_error, perso_sync.RecordingError)
    assert "device unplugged" in str(errors.calls[0])
    assert session.wait_voice_chat_sent(timeout=5)  # it went silent: nothing more to send
    with pytest.warns(DeprecationWarning, match="deprecated"):
        session.stop_voice_chat()


def test_voice_chat_source_errors(perso_mock: Any, open_session: Any, tmp_path: Path) -> None:
    plain = open_session()
    assert _sdp_audio_direction(perso_mock.sessions[plain.session_id].client_sdp) == "recvonly"
    with (
        pytest.warns(DeprecationWarning, match="deprecated"),
        pytest.raises(perso_sync.InvalidInputError, match="voice_chat=True"),
    ):
        plain.start_voice_chat(source=b"RIFF")
    assert plain.wait_voice_chat_sent(timeout=1)  # nothing plays

    session = open_session(voice_chat=True)
    errors = Recorder()
    session.set_error_handler(errors)
    with (
        pytest.warns(DeprecationWarning, match="deprecated"),
        pytest.raises(perso_sync.STTError) as raised,
    ):
        session.start_voice_chat(source=b"certainly not audio" * 30)
    assert isinstance(raised.value.underlying_error, perso_sync.AudioFormatError)
    with (
        pytest.warns(DeprecationWarning, match="deprecated"),
        pytest.raises(perso_sync.InvalidInputError, match="not found"),
    ):
        session.start_voice_chat(source=tmp_path / "missing.wav")
    # Nothing was started: no record-start went out, no state changed.
    assert perso_mock.journal.messages(session_id=session.session_id, type="record-start") == []
    assert session.chat_states == IDLE
    errors.wait_count(1)
    with pytest.raises(perso_sync.InvalidInputError, match="voice_chat"):
        open_session(voice_chat="yes")


# ------------------------------------------------------------------- the avatar's media


def _wait_for_requested_size(session: Any) -> None:
    # Frames already on their way when change-size arrived still have the initial size.
    def resized() -> bool:
        frame = session.latest_frame()
        return frame is not None and (frame.width, frame.height) == (WIDTH, HEIGHT)

    wait_until(resized, timeout=10, what="a frame of the requested size")


def test_frames_have_the_requested_size(open_session: Any) -> None:
    session = open_session()
    assert session.video_track is not None
    assert session.audio_track is not None
    _wait_for_requested_size(session)
    with session.frames(timeout=10) as frames:
        sizes = [(frame.width, frame.height) for _, frame in zip(range(3), frames, strict=False)]
    assert sizes == [(WIDTH, HEIGHT)] * 3


def test_no_video_when_not_received(open_session: Any) -> None:
    session = open_session(receive_video=False)
    assert session.video_track is None
    assert session.audio_track is not None
    with pytest.raises(perso_sync.InvalidInputError):
        session.frames()


def test_record_writes_video_frames_of_the_requested_size(
    open_session: Any, tmp_path: Path
) -> None:
    session = open_session()
    path = tmp_path / "avatar.mp4"
    _wait_for_requested_size(session)

    with session.record(path) as recording:
        assert recording.active
        with session.frames(timeout=10) as frames:
            for _, _frame in zip(range(5), frames, strict=False):
                pass
    assert not recording.active

    with av.open(str(path)) as container:
        assert container.streams.audio
        video = container.streams.video[0]
        decoded = [(f.width, f.height) for f in container.decode(video)]
    assert decoded
    assert set(decoded) == {(WIDTH, HEIGHT)}


def test_recording_stops_when_the_session_closes(open_session: Any, tmp_path: Path) -> None:
    session = open_session()
    path = tmp_path / "avatar.wav"
    recording = session.record(path)
    with session.frames(timeout=10) as frames:
        next(iter(frames))
    session.stop_session()

    assert not recording.active
    recording.stop()  # harmless after close
    with wave.open(str(path)) as reader:
        assert reader.getnframes() > 0
