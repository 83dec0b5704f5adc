"""TTS makes real audio that STT reads back; STT refuses what is not audio."""

from __future__ import annotations

import base64
import io
import wave

import pytest
from _http_helpers import create, first_error, post

from mock_server import MockPersoServer


@pytest.fixture
def session_id(perso_mock: MockPersoServer) -> str:
    return str(
        create(perso_mock, stt_text_normalization_config="tnc-en-numbers").json()["session_id"]
    )


def tts(server: MockPersoServer, session_id: str, **body: object) -> bytes:
    response = post(server, f"/api/v1/session/{session_id}/tts/", json=body)
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["audio"])


def stt(server: MockPersoServer, session_id: str, audio: bytes, **fields: str) -> dict[str, str]:
    response = post(
        server,
        f"/api/v1/session/{session_id}/stt/",
        files={"audio": ("audio.wav", audio, "audio/wav")},
        data=fields,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_tts_is_a_24khz_wav_whose_length_follows_the_text(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    short = tts(perso_mock, session_id, text="Hi there.")
    long = tts(perso_mock, session_id, text="Hi there. " * 10)
    with wave.open(io.BytesIO(short)) as reader:
        assert reader.getframerate() == 24000
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
        short_frames = reader.getnframes()
    with wave.open(io.BytesIO(long)) as reader:
        assert reader.getnframes() > 5 * short_frames


def test_tts_stt_round_trip_returns_the_original_text(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    audio = tts(perso_mock, session_id, text="It is 5 km to the station.", locale="en")
    result = stt(perso_mock, session_id, audio, language="en-US")
    assert result["text"] == "It is 5 km to the station."
    assert result["locale"] == "en-US"
    assert result["normalized_text"] == "It is 5 kilometers to the station."


def test_mp3_output_round_trip(perso_mock: MockPersoServer, session_id: str) -> None:
    audio = tts(perso_mock, session_id, text="An MP3 answer.", output_format="mp3")
    assert audio[:3] == b"ID3" or audio[0] == 0xFF
    assert stt(perso_mock, session_id, audio)["text"] == "An MP3 answer."


def test_stt_matches_converted_audio_by_duration(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    # A client that resampled the TTS audio to 16 kHz lost the embedded text.
    tts(perso_mock, session_id, text="Short one.")
    original = tts(perso_mock, session_id, text="A somewhat longer sentence to recognise.")
    with wave.open(io.BytesIO(original)) as reader:
        seconds = reader.getnframes() / reader.getframerate()
    converted = io.BytesIO()
    with wave.open(converted, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(b"\x01\x00" * int(seconds * 16000))
    result = stt(perso_mock, session_id, converted.getvalue())
    assert result["text"] == "A somewhat longer sentence to recognise."


def test_unknown_audio_gets_the_configured_transcript(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    silence = io.BytesIO()
    with wave.open(silence, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(b"\x00\x00" * 1234)
    assert (
        stt(perso_mock, session_id, silence.getvalue())["text"]
        == (perso_mock.catalog.settings["stt_default_text"])
    )
    perso_mock.sessions[session_id].stt_text = "scripted words"
    assert stt(perso_mock, session_id, silence.getvalue())["text"] == "scripted words"


def test_non_audio_is_a_400_with_the_standard_body(
    perso_mock: MockPersoServer, session_id: str
) -> None:
    response = post(
        perso_mock,
        f"/api/v1/session/{session_id}/stt/",
        files={"audio": ("audio.wav", b"this is plain text, not audio", "audio/wav")},
    )
    assert response.status_code == 400
    assert first_error(response)["attr"] == "audio"


def test_missing_audio_field_is_a_400(perso_mock: MockPersoServer, session_id: str) -> None:
    response = post(perso_mock, f"/api/v1/session/{session_id}/stt/", data={"language": "en"})
    assert response.status_code == 400
    assert first_error(response)["code"] == "required"


@pytest.mark.parametrize(
    ("body", "attr"),
    [
        ({}, "text"),
        ({"text": "  "}, "text"),
        ({"text": "x", "output_format": "ogg"}, "output_format"),
    ],
)
def test_bad_tts_body_is_400(
    perso_mock: MockPersoServer, session_id: str, body: dict[str, str], attr: str
) -> None:
    response = post(perso_mock, f"/api/v1/session/{session_id}/tts/", json=body)
    assert response.status_code == 400
    assert first_error(response)["attr"] == attr


def test_strict_capabilities_refuse_tts_without_the_capability(
    perso_mock: MockPersoServer,
) -> None:
    perso_mock.catalog.settings["strict_capabilities"] = True
    session = create(perso_mock, tts_type=...).json()["session_id"]
    response = post(perso_mock, f"/api/v1/session/{session}/tts/", json={"text": "Hi."})
    assert response.status_code == 400


@pytest.mark.parametrize("text", ["Yes.", "Hello world.", "A somewhat longer sentence to say."])
def test_the_voiced_span_of_the_mock_voice_is_its_length(text: str) -> None:
    from mock_server import speech

    wav = speech.synthesize_wav(text, sample_rate=16000)
    pcm = wav[wav.index(b"data") + 8 : wav.index(speech.TEXT_CHUNK_ID)]
    padded = bytes(8000) + pcm + bytes(8000)  # 0.25 s of silence on each side
    voiced = speech.voiced_duration(padded, 16000)
    # Only the soft onset of the tone falls under the threshold.
    assert speech.speech_duration(text) - 0.05 < voiced <= speech.speech_duration(text)
    assert speech.voiced_duration(bytes(16000), 16000) == 0.0


def test_uplink_matching_picks_the_closest_within_the_tolerance() -> None:
    from mock_server import speech
    from mock_server.state import SynthesizedSpeech

    spoken = [
        SynthesizedSpeech(text=text, locale=None, duration=speech.speech_duration(text))
        for text in ("Yes.", "No, thanks.", "Tell me more about it.")
    ]
    assert speech.match_uplink(0.27, spoken).text == "Yes."
    assert speech.match_uplink(0.62, spoken).text == "No, thanks."
    assert speech.match_uplink(1.0, spoken) is None
    assert speech.match_uplink(1.3, spoken).text == "Tell me more about it."
