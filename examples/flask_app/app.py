"""A legacy Flask (WSGI) app using perso_sync the way the reference recommends.

The server holds the API key and creates session ids; the browser (or any untrusted client) only
ever receives a session id, which it then uses for the avatar's WebRTC connection. Routes:

    POST /api/session  {"templateId"?: str}                    -> {"sessionId": str}
    POST /api/chat     {"sessionId": str, "message": str}      -> the reply, streamed (text/plain)
    POST /api/tts      {"sessionId": str, "text": str, "resample"?: bool}  -> audio/wav

Errors are JSON ``{"error": <class>, "code"?, "detail", "attr"?}`` with a 4xx status for the
caller's mistakes and 502/504 when the platform failed; the key never appears in a response.

Run it::

    PERSO_INTERACTIVE_API_KEY=... flask --app examples/flask_app/app.py run
    PERSO_INTERACTIVE_API_KEY=... gunicorn -w 2 --chdir examples/flask_app 'app:create_app()'

Pre-fork servers are safe: plain REST calls (session ids, TTS) use ``requests`` in the worker's
own thread, and the background event loop that streams LLM replies is started per process on
first use; a forked worker never reuses its parent's loop, threads or connections, even when
the parent had started them (``--preload`` with ``warm_up=True`` shows exactly that).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request

import perso_sync as perso

#: Conversations (LLM histories) kept per worker process; the least recently used goes first.
MAX_CONVERSATIONS = 1000


def _error_response(exc: perso.PersoError) -> tuple[Response, int]:
    """Our exceptions as HTTP answers: the caller's mistakes 4xx, the platform's failures 5xx."""
    inner: perso.PersoError = exc
    if isinstance(exc, (perso.LLMError, perso.TTSError, perso.STTError)):
        inner = exc.underlying_error
    body: dict[str, Any] = {"error": type(exc).__name__, "detail": str(inner)}
    if isinstance(inner, perso.ApiError):
        body.update(code=inner.code, detail=inner.detail, attr=inner.attr)
        if inner.error_code in (401, 403):
            status = 502  # our credentials were refused: the server's problem, not the caller's
        elif 400 <= inner.error_code < 500:
            status = inner.error_code  # e.g. 404 for a session id the platform does not know
        else:
            status = 502
    elif isinstance(inner, perso.InvalidInputError):
        status = 400
    elif isinstance(inner, perso.PersoTimeoutError):
        status = 504
    else:
        status = 502
    return jsonify(body), status


def create_app(
    api_key: str | None = None,
    api_server: str | None = None,
    *,
    warm_up: bool = False,
    worker_header: bool = False,
) -> Flask:
    """The app. ``api_key``/``api_server`` default to ``$PERSO_INTERACTIVE_API_KEY`` /
    ``$PERSO_API_SERVER``; ``$PERSO_TEMPLATE_ID`` picks the session template (default: the
    first WebRTC one).

    ``warm_up=True`` runs one LLM turn while the app is built. Under ``gunicorn --preload`` that
    happens in the master, *before* it forks its workers: the master then owns a running
    perso_sync event-loop thread and a pooled HTTP connection, the situation in which a
    library that is not fork-safe hands its children a dead loop or a shared socket. The fork
    test uses it to prove the workers still work; an app has no need for it.
    ``worker_header=True`` adds ``X-Worker-Pid`` (and ``X-Warmed-Up-In``, the pid that ran the
    warm-up) to responses, so a test can see which process answered.
    """
    app = Flask(__name__)
    client = perso.PersoClient(api_key=api_key, api_server=api_server)
    configured_template = os.environ.get("PERSO_TEMPLATE_ID")
    # The LLM history of each conversation lives in the worker that served it (a real app
    # would keep it in its own store and restore it with add_to_history()).
    conversations: OrderedDict[str, perso.LlmProcessor] = OrderedDict()
    lock = threading.Lock()
    warmed_up_in: list[int] = []  # the pid that ran the warm-up, if any

    def default_template() -> str:
        if configured_template:
            return configured_template
        for template in client.get_session_templates():
            if template.model_style.platform_type in (None, "webrtc"):
                return template.sessiontemplate_id
        raise perso.InvalidInputError("no WebRTC session template is available")

    def processor_for(session_id: str) -> perso.LlmProcessor:
        evicted: list[perso.LlmProcessor] = []
        with lock:
            processor = conversations.pop(session_id, None)
            if processor is None:
                processor = perso.LlmProcessor(api_server=client.api_server, session_id=session_id)
            conversations[session_id] = processor
            while len(conversations) > MAX_CONVERSATIONS:
                evicted.append(conversations.popitem(last=False)[1])
        for old in evicted:
            old.close()
        return processor

    def json_body() -> dict[str, Any]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise perso.InvalidInputError("the request body must be a JSON object")
        return body

    def required(body: dict[str, Any], key: str) -> str:
        value = body.get(key)
        if not isinstance(value, str) or not value.strip():
            raise perso.InvalidInputError(f"'{key}' is required and must be a non-empty string")
        return value

    @app.errorhandler(perso.PersoError)
    def handle_perso_error(exc: perso.PersoError) -> tuple[Response, int]:
        return _error_response(exc)

    @app.post("/api/session")
    def create_session() -> Response:
        body = request.get_json(silent=True) or {}
        template_id = body.get("templateId") if isinstance(body, dict) else None
        session_id = client.create_session_id(session_template_id=template_id or default_template())
        return jsonify({"sessionId": session_id})

    @app.post("/api/chat")
    def chat() -> Response | tuple[Response, int]:
        body = json_body()
        session_id = required(body, "sessionId")
        message = required(body, "message")
        stream = processor_for(session_id).process_llm(message)
        # Wait for the first chunk before answering, so that a failed turn (an unknown
        # session id, say) is an HTTP error rather than a 200 whose body says "error".
        try:
            first = next(stream, None)
        except BaseException:
            stream.close()
            raise
        if isinstance(first, perso.ErrorChunk):
            stream.close()
            return _error_response(first.error)

        def generate() -> Iterator[str]:
            shown = ""
            with stream:  # the client going away closes the response, hence the LLM stream
                for chunk in itertools.chain([first] if first else [], stream):
                    if chunk.type == "message":
                        if not chunk.message.startswith(shown):
                            shown = ""  # a new message began (after tool calls)
                        yield chunk.message[len(shown) :]
                        shown = chunk.message
                        if chunk.finish:
                            shown = ""
                    elif chunk.type == "error":
                        yield f"\n[error: {chunk.error}]\n"
                        return

        return Response(generate(), mimetype="text/plain; charset=utf-8")

    @app.post("/api/tts")
    def tts() -> Response:
        body = json_body()
        session_id = required(body, "sessionId")
        text = required(body, "text")
        try:
            encoded = client.make_tts(session_id, text, output_format="wav").audio
        except perso.ApiError as exc:
            raise perso.TTSError(exc) from exc
        try:
            audio = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise perso.TTSError(perso.TTSDecodeError("Invalid Base64 audio data")) from None
        if body.get("resample"):
            from perso_sync.audio import resample_wav

            audio = resample_wav(audio, perso.TTS_TARGET_SAMPLE_RATE)
        return Response(audio, mimetype="audio/wav")

    if worker_header:

        @app.after_request
        def add_worker_headers(response: Response) -> Response:
            response.headers["X-Worker-Pid"] = str(os.getpid())
            if warmed_up_in:
                response.headers["X-Warmed-Up-In"] = str(warmed_up_in[0])
            return response

    if warm_up:
        session_id = client.create_session_id(session_template_id=default_template())
        with perso.LlmProcessor(api_server=client.api_server, session_id=session_id) as warm:
            for chunk in warm.process_llm("warm-up"):
                if chunk.type == "error":
                    raise chunk.error
        warmed_up_in.append(os.getpid())

    return app
