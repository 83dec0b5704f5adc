"""Text to speech and speech to text (docs/PROTOCOL.md §10): real audio the mock's STT reads
back (see :mod:`mock_server.speech`).
"""

from __future__ import annotations

import asyncio
import base64

from aiohttp import web

from mock_server.catalog import normalize_text
from mock_server.context import RAW_KEY, SESSION_KEY, MockContext, as_float
from mock_server.errors import error_response
from mock_server.speech import (
    NotAudioError,
    inspect_audio,
    match_by_duration,
    speech_duration,
    synthesize_mp3,
    synthesize_wav,
)
from mock_server.state import MockSession, SynthesizedSpeech
from mock_server.validation import capability_json_request, capability_refusal, parse_multipart

#: The longest TTS text when the catalog setting ``tts_max_chars`` is absent.
DEFAULT_TTS_MAX_CHARS = 5000


async def tts(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    checked = capability_json_request(request, ctx, "TTS")
    if isinstance(checked, web.Response):
        return checked
    session, body = checked
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return error_response(
            400, "validation_error", "required", "This field is required.", "text"
        )
    limit = as_float(ctx.catalog.settings.get("tts_max_chars"))
    max_chars = int(limit) if limit is not None else DEFAULT_TTS_MAX_CHARS
    if len(text) > max_chars:
        # Synthesis grows with the text (about 4 KB of WAV per character): refused up front.
        return error_response(
            400,
            "validation_error",
            "max_length",
            f"Ensure this field has no more than {max_chars} characters.",
            "text",
        )
    locale = body.get("locale")
    if locale is not None and not isinstance(locale, str):
        return error_response(400, "validation_error", "invalid", "Not a valid string.", "locale")
    output_format = body.get("output_format") or "wav"
    if not isinstance(output_format, str) or output_format.lower() not in ("wav", "mp3"):
        return error_response(
            400,
            "validation_error",
            "invalid_choice",
            f'"{output_format}" is not a valid choice.',
            "output_format",
        )
    make = synthesize_mp3 if output_format.lower() == "mp3" else synthesize_wav
    # Encoding is CPU work: off the loop, so pings and media of other sessions keep flowing.
    audio = await asyncio.get_running_loop().run_in_executor(None, make, text, locale)
    session.remember_speech(
        SynthesizedSpeech(text=text, locale=locale, duration=speech_duration(text))
    )
    return web.json_response({"audio": base64.b64encode(audio).decode("ascii")})


async def stt(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    session: MockSession = request[SESSION_KEY]
    refusal = capability_refusal(session, ctx, "STT")
    if refusal is not None:
        return refusal
    form = parse_multipart(request.headers.get("Content-Type", ""), request[RAW_KEY])
    audio = form.get("audio") if form is not None else None
    if audio is None or audio.data is None:
        return error_response(
            400, "validation_error", "required", "No audio file was submitted.", "audio"
        )
    language_part = form.get("language") if form is not None else None
    language = language_part.text() if language_part is not None else None
    try:
        info = await asyncio.get_running_loop().run_in_executor(None, inspect_audio, audio.data)
    except NotAudioError as exc:
        return error_response(400, "client_error", "invalid_audio", str(exc), "audio")
    text = info.text
    locale = info.locale
    if text is None:
        matched = match_by_duration(info.duration, list(reversed(session.speeches)))
        if matched is not None:
            text, locale = matched.text, matched.locale
    if text is None:
        text = session.stt_text or str(ctx.catalog.settings.get("stt_default_text") or "")
    locale = language or locale or "en"
    rules = ctx.catalog.normalization_rules(session.params.get("stt_text_normalization_config"))
    return web.json_response(
        {"text": text, "locale": locale, "normalized_text": normalize_text(text, rules)}
    )
