"""Memory: RSS growth of this process over many LLM turns and over many sessions.

Two loops, each measured after a warm-up (imports, codec set-up and allocator pools are not
growth), with the garbage collected and freed heap trimmed before each RSS reading:

- 1 000 LLM turns on one session id through ``LlmProcessor.process_llm`` (the mock answers with
  a short fast script). Baseline: the same 1 000 requests as bare ``requests`` posts reading the
  same SSE answer and keeping the same history by hand. The history itself grows with the
  turns (2 entries a turn, as the protocol requires), in both loops alike.
- 100 WebRTC sessions opened, chatted once and closed (64x48 video). Baseline: the same loop
  doing only its bare REST calls (create the session id, session info, ICE servers, the LLM
  turn's request, the end event) with ``requests``.

The mock runs in a child process so that its journal and sessions are not counted here.
Bar: growth flat, under 10 MB for each loop.
"""

from __future__ import annotations

import json
from typing import Any

import requests

from bench._mock_process import MockProcess, rss_bytes, trim_heap
from bench._report import Row, format_table
from perso_sync import _endpoints as ep

TURNS = 1000
TURN_WARMUP = 50
SESSIONS = 100
SESSION_WARMUP = 10
BAR_MB = 10.0
MB = 1024 * 1024


def _growth_mb(loop: Any, count: int, warmup: int) -> tuple[float, float]:
    """RSS growth over ``count`` iterations after ``warmup``, and over the second half alone
    (a leak keeps growing there; an allocator settling in does not)."""
    for index in range(warmup):
        loop(index)
    trim_heap()
    before = rss_bytes()
    for index in range(count // 2):
        loop(index)
    trim_heap()
    middle = rss_bytes()
    for index in range(count // 2, count):
        loop(index)
    trim_heap()
    after = rss_bytes()
    return (after - before) / MB, (after - middle) / MB


def _rows(what: str, count: int, ours: tuple[float, float], base: tuple[float, float]) -> list[Row]:
    return [
        Row(
            metric=f"RSS growth, {count} {what}",
            ours=ours[0],
            baseline=base[0],
            unit="MB",
            bar=f"< {BAR_MB:g} MB",
            passed=ours[0] < BAR_MB,
        ),
        Row(
            metric=f"RSS growth, last {count - count // 2} of those",
            ours=ours[1],
            baseline=base[1],
            unit="MB",
            bar=f"flat: < {BAR_MB / 4:g} MB",
            passed=ours[1] < BAR_MB / 4,
        ),
    ]


def _llm_rows(mock: MockProcess) -> list[Row]:
    import perso_sync

    mock.control("PUT", "llm_script", {"default_reply": "Fine, thanks.", "delay": 0})
    with perso_sync.PersoClient(api_key=mock.api_key, api_server=mock.url) as client:
        sid_ours = client.create_session_id(params=mock.session_params())
        sid_bare = client.create_session_id(params=mock.session_params())

    http = requests.Session()
    bare_history: list[dict[str, Any]] = []
    url = mock.url + ep.llm_v2(sid_bare)

    def bare_turn(index: int) -> None:
        message = {"role": "user", "type": "message", "content": f"turn {index}"}
        body = {"messages": [*bare_history, message], "tools": []}
        with http.post(url, json=body, stream=True, timeout=30) as response:
            text = []
            for line in response.iter_lines():
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if event.get("type") == "message":
                        text.append(event.get("content") or "")
        bare_history.extend(
            [message, {"role": "assistant", "type": "message", "content": "".join(text)}]
        )

    with perso_sync.LlmProcessor(api_server=mock.url, session_id=sid_ours) as processor:

        def our_turn(index: int) -> None:
            with processor.process_llm(f"turn {index}") as stream:
                for chunk in stream:
                    if chunk.type == "error":
                        raise chunk.error

        base_mb = _growth_mb(bare_turn, TURNS, TURN_WARMUP)
        ours_mb = _growth_mb(our_turn, TURNS, TURN_WARMUP)
        assert len(processor.get_history()) == 2 * (TURNS + TURN_WARMUP)
    http.close()
    return _rows("LLM turns on one session", TURNS, ours_mb, base_mb)


def _session_rows(mock: MockProcess) -> list[Row]:
    import perso_sync

    mock.control("PUT", "llm_script", {"default_reply": "Hi.", "delay": 0})
    params = mock.session_params()
    with perso_sync.PersoClient(api_key=mock.api_key, api_server=mock.url) as client:

        def our_session(index: int) -> None:
            sid = client.create_session_id(params=params)
            with client.create_session(sid, width=64, height=48) as session:
                session.process_chat(f"hello {index}")

        http = requests.Session()
        headers = {ep.API_KEY_HEADER: mock.api_key}
        base = mock.url

        def bare_rest(index: int) -> None:
            body = {**params, "capability": ["LLM", "TTS", "STT", "STF_WEBRTC"]}
            answer = http.post(base + ep.SESSIONS, json=body, headers=headers, timeout=30)
            sid = answer.json()["session_id"]
            http.get(base + ep.session_info(sid), timeout=30).json()
            http.get(base + ep.ice_servers(sid), timeout=30).json()
            llm = {"messages": [{"role": "user", "type": "message", "content": f"hello {index}"}]}
            http.post(base + ep.llm_v2(sid), json=llm, timeout=30).content  # noqa: B018
            event = {"event": "SESSION_END", "detail": ""}
            http.post(base + ep.session_event(sid), json=event, timeout=30)

        base_mb = _growth_mb(bare_rest, SESSIONS, SESSION_WARMUP)
        ours_mb = _growth_mb(our_session, SESSIONS, SESSION_WARMUP)
        http.close()
    return _rows("sessions opened+closed", SESSIONS, ours_mb, base_mb)


def run() -> list[Row]:
    with MockProcess() as mock:
        rows = _llm_rows(mock)
        rows += _session_rows(mock)
    return rows


if __name__ == "__main__":
    print(format_table(run()))
