"""``os.fork()`` with a session open (gunicorn's pre-fork workers): the child gets a runtime of
its own and can open a session and chat; the parent's session is unharmed."""

from __future__ import annotations

import os
import select
import signal
import traceback
from typing import Any

import pytest

import perso_sync
from mock_server import MockPersoServer

pytestmark = pytest.mark.timeout(30)

CHILD_DEADLINE = 20  # seconds; the child is killed by SIGALRM if it hangs


def _child(server_url: str, api_key: str, child_sid: str, report: int) -> None:
    """Runs in the forked child; never returns (os._exit)."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not the parent's pytest-timeout handler
    signal.alarm(CHILD_DEADLINE)
    code = 1
    try:
        with perso_sync.PersoClient(api_key=api_key, api_server=server_url) as client:
            assert client.get_llms()  # plain REST
            with client.create_session(
                child_sid, width=64, height=48, receive_video=False
            ) as session:
                chunks = list(session.process_llm("hello from the child"))
                assert chunks[-1].type == "message", chunks
                assert session.process_chat("and a spoken turn")
        code = 0
    except BaseException:  # noqa: BLE001 -- everything goes back to the parent
        os.write(report, traceback.format_exc().encode())
    finally:
        os.close(report)
        os._exit(code)


def _wait_child(pid: int, timeout: float) -> int:
    """The child's exit code; kill it and fail after ``timeout`` seconds."""
    pidfd = os.pidfd_open(pid)  # readable once the child exited
    try:
        exited, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if not exited:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"the forked child did not finish within {timeout}s")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_forked_child_opens_a_session_and_the_parent_keeps_its_own(
    perso_mock: MockPersoServer, open_session: Any
) -> None:
    parent_session = open_session()
    assert list(parent_session.process_llm("before the fork"))[-1].type == "message"
    child_sid = perso_mock.create_session_id()
    read_end, write_end = os.pipe()

    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(perso_mock.url, perso_mock.api_key, child_sid, write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        exit_code = _wait_child(pid, CHILD_DEADLINE + 5)
        child_error = report.read().decode(errors="replace")
    assert exit_code == 0, child_error

    # The child's session really ran against the server, and closed.
    child = perso_mock.sessions[child_sid]
    assert len(child.llm_requests) == 2
    perso_mock.wait_for_status(child_sid, "TERMINATED")
    # The parent's session and runtime are untouched by the child's exit.
    assert not parent_session.closed
    assert list(parent_session.process_llm("after the fork"))[-1].type == "message"
    parent_session.process_ttstf("still here")
    assert parent_session.wait_until_idle(timeout=8)
    assert perso_mock.sessions[parent_session.session_id].status == "IN_PROGRESS"
