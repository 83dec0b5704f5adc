"""``python -m mock_server``, the fixtures, and MockPersoServer's lifecycle."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from _http_helpers import TIMEOUT, get

from mock_server import MockPersoServer

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    return lines.get(timeout=timeout)


def test_python_m_mock_server_prints_one_line_and_serves(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"llm_types": [{"name": "file-llm", "service": "x"}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mock_server",
            "--port",
            "0",
            "--api-key",
            "cli-key",
            "--catalog",
            str(catalog),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        line = _first_line(process, timeout=20)
        match = re.fullmatch(
            r"Perso mock server on (http://127\.0\.0\.1:\d+) \(API key: cli-key\)\n", line
        )
        assert match, line
        url = match.group(1)
        response = requests.get(
            url + "/api/v1/settings/llm_type/", headers={"PersoLive-APIKey": "cli-key"}, timeout=5
        )
        assert response.json() == [{"name": "file-llm", "service": "x"}]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout is not None
        assert process.stdout.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_bad_catalog_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mock_server.__main__ import main

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["--catalog", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "cannot read catalog" in captured.err
    assert captured.out == ""


def test_factory_gives_dedicated_servers(
    perso_mock_factory: Callable[..., MockPersoServer], tmp_path: Path
) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"prompts": [{"prompt_id": "p1", "name": "P", "system_prompt": "s"}]})
    )
    one = perso_mock_factory(api_key="k1", catalog=path)
    two = perso_mock_factory()
    assert one.url != two.url
    assert two.api_key == "test-key"
    assert [p["prompt_id"] for p in get(one, "/api/v1/prompt/").json()] == ["p1"]
    assert len(get(two, "/api/v1/prompt/").json()) == 3


def test_start_and_stop_are_bounded_and_idempotent() -> None:
    server = MockPersoServer(api_key="k")
    with pytest.raises(RuntimeError):
        _ = server.url
    server.start()
    assert server.start() is server
    url = server.url
    assert requests.get(url + "/api/v1/prompt/", headers={"PersoLive-APIKey": "k"}, timeout=5).ok
    server.stop()
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/api/v1/prompt/", timeout=TIMEOUT)


def test_port_in_use_fails_to_start_clearly(perso_mock: MockPersoServer) -> None:
    assert perso_mock.port is not None
    with pytest.raises(RuntimeError, match="could not start"):
        MockPersoServer(port=perso_mock.port).start()


FIXTURE_USER_TEST = """
import requests

def test_settings(perso_mock):
    response = requests.get(
        perso_mock.url + "/api/v1/settings/llm_type/",
        headers={"PersoLive-APIKey": perso_mock.api_key},
        timeout=5,
    )
    assert response.status_code == 200
    perso_mock.catalog.llm_types.clear()

def test_fresh_state(perso_mock):
    assert perso_mock.api_key == "test-key"
    assert perso_mock.catalog.llm_types
"""


def test_fixture_works_from_a_test_file_outside_the_package(pytester: pytest.Pytester) -> None:
    # In-process run of a user's test file: the plugin comes from the pytest11 entry point.
    pytester.makepyfile(test_user=FIXTURE_USER_TEST)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=2)


def test_a_stopped_server_can_start_again_with_its_state() -> None:
    server = MockPersoServer(api_key="k")
    with server:
        session_id = server.create_session_id()
    with server:
        response = requests.get(f"{server.url}/api/v1/session/{session_id}/", timeout=TIMEOUT)
        assert response.status_code == 200
