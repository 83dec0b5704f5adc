"""The wheel we would publish, installed as a user installs it: into a fresh virtual environment
(not editable, with its declared dependencies), used from a directory outside the source tree.

``make dist`` runs this module against the wheel it built (``PERSO_WHEEL=dist/...whl``); run
alone (``make test``), it builds one from this checkout first. Every command runs in a temporary
directory with a cleaned environment, and the first check proves that ``perso_sync`` and
``mock_server`` are imported from the fresh environment, never from this checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from perso_sync import __version__

REPO = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT = 300.0  # an upper bound for a loaded 2-core machine; none of them takes that long

pytestmark = pytest.mark.slow


def _run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def _clean_env(venv: Path) -> dict[str, str]:
    """The environment of a user's shell with the fresh venv activated: nothing of ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "PYTEST", "VIRTUAL_ENV", "PERSO_"))
    }
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("PERSO_WHEEL")
    if given:
        path = Path(given).resolve()
        assert path.is_file(), f"PERSO_WHEEL={given} is not a file"
        return path
    out = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
        cwd=out,
        env=dict(os.environ),
    )
    (path,) = out.glob("perso_sync-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site-packages) with the wheel, its ``mock`` extra and pytest."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    # --without-pip plus the running pip's --python: the same install, without ensurepip's time.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent, env={})
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{wheel}[mock]",
            "pytest",
        ],
        cwd=venv.parent,
        env=dict(os.environ),
    )
    return venv


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory that is not the checkout and holds nothing importable."""
    assert REPO not in tmp_path.parents
    return tmp_path


def test_the_packages_import_from_the_installed_wheel(venv: Path, outside: Path) -> None:
    code = (
        "import json, sys, perso_sync, mock_server, mock_server.pytest_plugin;"
        "print(json.dumps([perso_sync.__file__, mock_server.__file__,"
        " perso_sync.__version__, sys.path]))"
    )
    result = _run([str(venv / "bin" / "python"), "-c", code], outside, _clean_env(venv))
    perso_file, mock_file, version, path = json.loads(result.stdout)
    site = str(venv / "lib")
    assert perso_file.startswith(site), f"perso_sync came from {perso_file}, not the wheel"
    assert mock_file.startswith(site), f"mock_server came from {mock_file}, not the wheel"
    assert not any(entry.startswith(str(REPO)) for entry in path), path
    assert version == __version__, f"the wheel is version {version}, this checkout {__version__}"


def test_the_perso_command_is_installed(venv: Path, outside: Path) -> None:
    result = _run([str(venv / "bin" / "perso"), "--help"], outside, _clean_env(venv))
    assert "usage: perso" in result.stdout
    for command in ("settings", "chat", "stf", "mock"):
        assert command in result.stdout


def test_python_m_mock_server_runs(venv: Path, outside: Path) -> None:
    result = _run(
        [str(venv / "bin" / "python"), "-m", "mock_server", "--help"], outside, _clean_env(venv)
    )
    assert "usage: python -m mock_server" in result.stdout
    assert "--api-key" in result.stdout


def test_the_perso_mock_fixture_serves_a_user_test_suite(venv: Path, outside: Path) -> None:
    # A user's own test file: it asks for the fixture by name only (the plugin comes from the
    # wheel's pytest11 entry point), lists settings over REST and chats over real WebRTC.
    (outside / "test_my_app.py").write_text(
        textwrap.dedent(
            """
            import perso_sync as perso

            def test_chat_against_the_mock(perso_mock):
                client = perso.PersoClient(api_key=perso_mock.api_key, api_server=perso_mock.url)
                assert client.get_llms()
                sid = client.create_session_id(
                    session_template_id=client.get_session_templates()[0].sessiontemplate_id
                )
                with client.create_session(sid, width=320, height=240) as session:
                    reply = session.process_chat("ping from the wheel")
                assert "ping from the wheel" in reply
                assert perso_mock.journal.requests(endpoint="create_session")
            """
        )
    )
    result = _run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        outside,
        _clean_env(venv),
    )
    assert "1 passed" in result.stdout
