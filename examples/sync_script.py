"""A whole Perso Interactive session from a plain synchronous script.

Run it with ``make demo`` (an embedded mock server, no account needed)::

    python examples/sync_script.py --embedded-mock

or against the real platform::

    PERSO_DEMO_REAL=1 PERSO_INTERACTIVE_API_KEY=... python examples/sync_script.py

It walks through: the account's settings, a session id from a template, a WebRTC session with
the avatar, a streamed chat turn in which the LLM calls one of our functions (a client tool),
text-to-speech to a file, speech-to-text of that file, speech-to-face (the avatar lip-syncs to
our audio) while a few seconds of the avatar are recorded to a video file, and a clean close.
Every step prints one line of the transcript.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import perso_sync as perso

_print_lock = threading.Lock()


def say(label: str, text: object = "", *, end: str = "\n") -> None:
    """One transcript line. Chat-state callbacks print from another thread: one write each."""
    with _print_lock:
        sys.stdout.write(f"{label:<14} {text}{end}")
        sys.stdout.flush()


def write(text: str) -> None:
    with _print_lock:
        sys.stdout.write(text)
        sys.stdout.flush()


# A client tool: when the LLM wants the weather, perso_sync calls this function (in a worker
# thread, never on its event loop) and sends the result back to the LLM, which then answers.
def get_weather(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"location": arguments.get("location", "Seoul"), "celsius": 21, "sky": "clear"}


WEATHER_TOOL = perso.ChatTool(
    name="get_weather",
    description="The current weather in a city",
    parameters={
        "type": "object",
        "properties": {"location": {"type": "string", "description": "a city, e.g. Seoul"}},
        "required": ["location"],
    },
    call=get_weather,
)


def run(client: perso.PersoClient, workdir: Path) -> None:
    # 1. What this account may use. get_all_settings() fetches the nine lists concurrently.
    settings = client.get_all_settings()
    say("LLMs", ", ".join(llm.name for llm in settings.llms))
    say("voices", ", ".join(tts.name for tts in settings.tts_types))
    say("prompts", ", ".join(prompt.name for prompt in settings.prompts))

    # 2. A session id from a template (Form B). Only "webrtc" templates can show an avatar here.
    template = next(
        (
            t
            for t in client.get_session_templates()
            if t.model_style.platform_type in (None, "webrtc")
        ),
        None,
    )
    if template is None:
        raise perso.InvalidInputError("this account has no WebRTC session template")
    say("template", f"{template.name} ({template.sessiontemplate_id})")
    session_id = client.create_session_id(session_template_id=template.sessiontemplate_id)
    say("session id", session_id)

    # 3. The live session. create_session() returns once the avatar's media and the data channel
    #    are up; leaving the with-block closes it. Keep the video small: we record it below.
    closed = threading.Event()
    close_reasons: list[str] = []
    with client.create_session(
        session_id, width=320, height=240, client_tools=[WEATHER_TOOL]
    ) as session:
        session.on_close(
            lambda manual: (close_reasons.append("manually" if manual else "lost"), closed.set())
        )
        session.subscribe_chat_states(
            lambda states: say(
                "  avatar", ", ".join(sorted(s.value.lower() for s in states)) or "idle"
            )
        )
        status = client.get_session_info(session_id).status
        say("connected", f"WebRTC, status {status.value if status else '?'}")

        # 4. A streamed chat turn. process_llm() is a plain iterator of typed chunks; the LLM
        #    asks for our tool, perso_sync runs it, and the answer streams in afterwards.
        #    (session.process_chat(text) would instead make the avatar speak every delta and
        #    return the final text, without streaming it to you.)
        question = "What's the weather in Seoul?"
        say("you", question)
        weather: dict[str, Any] = {}
        # Message chunks accumulate over the whole turn (tool rounds included); the one with
        # finish=True comes last and holds the whole reply.
        shown = ""
        line_open = False
        for chunk in session.process_llm(question):
            if chunk.type == "message":
                new = chunk.message[len(shown) :]
                if new and not line_open:
                    say("assistant", end="")
                    line_open = True
                write(new)
                shown = chunk.message
                if chunk.finish and line_open:
                    write("\n")
                    line_open = False
            elif chunk.type == "tool_call":
                if line_open:
                    write("\n")
                    line_open = False
                for call in chunk.tool_calls:
                    function = call["function"]
                    say("tool call", f"{function['name']}({function['arguments']})")
            elif chunk.type == "tool_result":
                weather = chunk.result
                say("tool result", json.dumps(chunk.result))
            elif chunk.type == "error":
                raise chunk.error

        # 5. Text-to-speech into a file, resampled to 16 kHz mono (what STT wants).
        line = f"{weather.get('location', 'Seoul')}: {weather.get('celsius', 21)} degrees."
        audio = session.process_tts(line, resample=True)
        if audio is None:
            raise perso.InvalidInputError("nothing to synthesize")
        wav_path = workdir / "tts.wav"
        wav_path.write_bytes(audio)
        rate = perso.get_wav_sample_rate(audio)
        say("TTS", f"{line!r} -> {len(audio)} bytes WAV, {rate} Hz -> {wav_path.name}")

        # 6. Speech-to-text of that file.
        say("STT", repr(session.transcribe_audio(wav_path)))

        # 7. Record the avatar while it lip-syncs to our audio (speech-to-face). process_stf()
        #    uploads the file on the WebRTC "file" channel and returns its file_ref; the avatar
        #    then speaks it. wait_until_idle() blocks until it has finished.
        video_path = workdir / "avatar.mp4"
        with session.record(video_path):
            file_ref = session.process_stf(wav_path, message=line)
            say("STF file_ref", file_ref)
            session.wait_until_idle(timeout=30)
        say("recording", f"{video_path.stat().st_size} bytes -> {video_path.name}")

    # 8. Leaving the with-block closed the session: on_close said how, the platform agrees.
    closed.wait(timeout=10)
    how = session.close_status
    say(
        "closed",
        f"{close_reasons[0] if close_reasons else '?'} ({how.code} {how.reason})",
    )
    final = client.get_session_info(session_id).status
    say("final status", final.value if final else "?")


@contextlib.contextmanager
def server_and_key(embedded: bool) -> Iterator[tuple[str | None, str | None]]:
    """The real platform with PERSO_DEMO_REAL=1 (or without --embedded-mock), else a mock
    server running in this process on 127.0.0.1 (stopped when the block ends)."""
    if os.environ.get("PERSO_DEMO_REAL") == "1" or not embedded:
        server = os.environ.get("PERSO_API_SERVER") or perso.DEFAULT_API_SERVER
        say("server", server)
        yield server, os.environ.get("PERSO_INTERACTIVE_API_KEY")
        return
    from mock_server import MockPersoServer

    with MockPersoServer() as mock:
        say("mock server", f"{mock.url} (embedded)")
        yield mock.url, mock.api_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A whole Perso Interactive session, step by step.")
    parser.add_argument(
        "--embedded-mock", action="store_true", help="run against a mock server in this process"
    )
    parser.add_argument("--keep", help="keep the files written (TTS, recording) in this folder")
    args = parser.parse_args(argv)
    try:
        with contextlib.ExitStack() as stack:
            api_server, api_key = stack.enter_context(server_and_key(args.embedded_mock))
            if args.keep:
                workdir = Path(args.keep)
                workdir.mkdir(parents=True, exist_ok=True)
            else:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            with perso.PersoClient(api_key=api_key, api_server=api_server) as client:
                run(client, workdir)
    except perso.PersoError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    say("done", "everything closed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
