"""Helpers shared by the mock server's HTTP tests (plain ``requests``, never perso_sync)."""

from __future__ import annotations

import json
from typing import Any

import requests

from mock_server import MockPersoServer

TIMEOUT = 5.0
FULL_PARAMS: dict[str, Any] = {
    "using_stf_webrtc": True,
    "model_style": "chaehee-front_white_shirt-nodded_loop",
    "prompt": "prompt-concierge",
    "llm_type": "gpt-4o-mini",
    "tts_type": "azure-en-US-JennyNeural",
    "stt_type": "azure-stt",
}


def key_headers(server: MockPersoServer) -> dict[str, str]:
    return {"PersoLive-APIKey": server.api_key}


def get(server: MockPersoServer, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("headers", key_headers(server))
    return requests.get(server.url + path, timeout=TIMEOUT, **kwargs)


def post(server: MockPersoServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.post(server.url + path, timeout=TIMEOUT, **kwargs)


def create(server: MockPersoServer, **overrides: Any) -> requests.Response:
    body = {**FULL_PARAMS, **overrides}
    body = {k: v for k, v in body.items() if v is not ...}
    return post(server, "/api/v1/session/", json=body, headers=key_headers(server))


def first_error(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"type", "errors"}
    return dict(body["errors"][0])


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    """Decode an LLM stream in either framing (blank lines and ``:`` comments skipped)."""
    events = []
    for line in raw.decode("utf-8").replace("\r\n", "\n").split("\n"):
        if not line or line.startswith(":"):
            continue
        assert line.startswith("data: {"), line
        events.append(json.loads(line[len("data: ") :]))
    return events


def llm(
    server: MockPersoServer, session_id: str, messages: list[Any], tools: list[Any] | None = None
) -> requests.Response:
    return post(
        server,
        f"/api/v1/session/{session_id}/llm/v2/",
        json={"messages": messages, "tools": tools or []},
    )


def reply_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e.get("type") == "message")


def tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": f"the {name} tool", "parameters": {}},
    }
