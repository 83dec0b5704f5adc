"""Sync tools and user callbacks share the process's worker threads: no concurrency or nesting
of turns may exhaust them into a deadlock, and busy tools never stop other sessions' callbacks.

REST-only sessions (no WebRTC) keep 32+ sessions cheap; the LLM is the mock's scripted one
("call tool NAME" makes it call that client tool).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _wait import wait_until

import perso_sync
from mock_server import MockPersoServer

pytestmark = pytest.mark.timeout(90)

#: As many concurrent turns as the process has worker threads for tools (the issue's 32).
CONCURRENCY = 32
CALL_TIMEOUT = 20.0


def _tool(name: str, call: Callable[[dict[str, Any]], Any]) -> perso_sync.ChatTool:
    return perso_sync.ChatTool(
        name=name, description=name, parameters={"type": "object", "properties": {}}, call=call
    )


@pytest.fixture
def rest_only_sessions(perso_mock: MockPersoServer) -> Iterator[Callable[..., perso_sync.Session]]:
    # Not the suite's leak-checked client: 32 concurrent turns leave up to 32 idle keep-alive
    # connections in the shared LLM pool, which httpx expires by itself (pooling by design).
    client = perso_sync.PersoClient(api_key=perso_mock.api_key, api_server=perso_mock.url)
    opened: list[perso_sync.Session] = []

    def make(**options: Any) -> perso_sync.Session:
        sid = perso_mock.create_session_id(using_stf_webrtc=False)
        session = client.create_session(sid, 64, 48, **options)
        opened.append(session)
        return session

    yield make
    client.close()  # closes every session it opened


def _run_in_threads(calls: list[Callable[[], object]]) -> list[object]:
    """Run every call in its own thread at once; their results (or exceptions), in order."""
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:  # noqa: BLE001 -- compared by the test
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CALL_TIMEOUT * 3)
    assert not any(thread.is_alive() for thread in threads), "calls still blocked"
    return results


def test_32_concurrent_chats_whose_sync_tool_runs_a_nested_turn_with_a_sync_tool(
    rest_only_sessions: Callable[..., perso_sync.Session],
) -> None:
    inner_results: list[object] = []
    holder: dict[int, perso_sync.Session] = {}
    # Every outer tool waits for all the others: all 32 hold a worker before any nests.
    all_inside = threading.Barrier(CONCURRENCY, timeout=CALL_TIMEOUT)

    def inner(args: dict[str, Any]) -> dict[str, Any]:
        return {"inner": "done"}

    def outer_for(index: int) -> Callable[[dict[str, Any]], Any]:
        def outer(args: dict[str, Any]) -> dict[str, Any]:
            all_inside.wait()
            # A nested turn from inside a sync tool: it needs a worker for its own sync tool.
            try:
                answer = holder[index].process_chat("call tool inner", timeout=CALL_TIMEOUT)
            except perso_sync.PersoError as exc:
                inner_results.append(exc)
                raise
            inner_results.append(answer)
            return {"nested": answer}

        return outer

    for index in range(CONCURRENCY):
        holder[index] = rest_only_sessions(
            client_tools=[_tool("outer", outer_for(index)), _tool("inner", inner)]
        )

    answers = _run_in_threads(
        [
            lambda s=session: s.process_chat("call tool outer", timeout=CALL_TIMEOUT * 2)
            for session in holder.values()
        ]
    )

    assert all(isinstance(answer, str) and answer for answer in answers), answers
    assert len(inner_results) == CONCURRENCY
    failed = [result for result in inner_results if not isinstance(result, str)]
    assert failed == []


def test_busy_sync_tools_never_stop_the_callbacks_of_other_sessions(
    rest_only_sessions: Callable[..., perso_sync.Session],
) -> None:
    entered = threading.Semaphore(0)
    release = threading.Event()

    def slow(args: dict[str, Any]) -> dict[str, Any]:
        entered.release()
        release.wait(CALL_TIMEOUT)  # a tool doing long blocking work of its own
        return {"slow": "done"}

    busy = [rest_only_sessions(client_tools=[_tool("slow", slow)]) for _ in range(CONCURRENCY)]
    other = rest_only_sessions()
    logs: list[list[perso_sync.Chat]] = []
    other.subscribe_chat_log(logs.append)

    results: list[object] = []
    workers = [
        threading.Thread(
            target=lambda s=session: results.append(s.process_chat("call tool slow", timeout=60))
        )
        for session in busy
    ]
    try:
        for worker in workers:
            worker.start()
        for _ in range(CONCURRENCY):  # every worker thread for tools is now taken
            assert entered.acquire(timeout=CALL_TIMEOUT), "not every slow tool started"

        assert other.process_chat("hello", timeout=CALL_TIMEOUT)
        wait_until(lambda: len(logs) >= 2, timeout=10, what="the other session's chat log")
    finally:
        release.set()
        for worker in workers:
            worker.join(CALL_TIMEOUT)
    assert len(results) == CONCURRENCY
