"""Every path of the Perso platform, in one place.

Account-scoped paths (``ACCOUNT_*``) are sent with the ``PersoLive-APIKey`` header; session-scoped
paths (functions of a session id) are sent without it: the session id is the credential.
All paths end with ``/``.
"""

from __future__ import annotations

from urllib.parse import quote

from perso_sync._version import __version__

API_KEY_HEADER = "PersoLive-APIKey"
DEFAULT_API_SERVER = "https://platform.perso.ai"
"""The API server used when neither ``api_server=`` nor ``$PERSO_API_SERVER`` is given."""
#: Sent with every request, REST and LLM alike (whichever HTTP library carries it).
USER_AGENT = f"perso_sync/{__version__}"

# Headers whose values never reach a log record, a repr, an error or a recorded contract.
SENSITIVE_HEADERS = frozenset({API_KEY_HEADER.lower(), "authorization", "cookie"})

LLM_TYPES = "/api/v1/settings/llm_type/"
TTS_TYPES = "/api/v1/settings/tts_type/"
STT_TYPES = "/api/v1/settings/stt_type/"
MODEL_STYLES = "/api/v1/settings/modelstyle/"  # query: platform_type=webrtc
BACKGROUND_IMAGES = "/api/v1/background_image/"
PROMPTS = "/api/v1/prompt/"
DOCUMENTS = "/api/v1/document/"
MCP_SERVERS = "/api/v1/settings/mcp_type/"
TEXT_NORMALIZATIONS = "/api/v1/settings/text_normalization_config/"
SESSION_TEMPLATES = "/api/v1/session_template/"
SESSIONS = "/api/v1/session/"


def _segment(value: str) -> str:
    # An id is one path segment: "/" or "?" in it must not change the path.
    return quote(value, safe="")


def text_normalization_download(config_id: str) -> str:
    return f"{TEXT_NORMALIZATIONS}{_segment(config_id)}/download/"


def session_template(template_id: str) -> str:
    return f"{SESSION_TEMPLATES}{_segment(template_id)}/"


def session_info(session_id: str) -> str:
    return f"{SESSIONS}{_segment(session_id)}/"


def ice_servers(session_id: str) -> str:
    return f"{session_info(session_id)}ice-servers/"


def exchange(session_id: str) -> str:
    return f"{session_info(session_id)}exchange/"


def session_event(session_id: str) -> str:
    return f"{session_info(session_id)}event/create/"


def stt(session_id: str) -> str:
    return f"{session_info(session_id)}stt/"


def tts(session_id: str) -> str:
    return f"{session_info(session_id)}tts/"


def llm_v2(session_id: str) -> str:
    return f"{session_info(session_id)}llm/v2/"


def normalize_api_server(api_server: str) -> str:
    """Trim a configured server URL and drop its trailing slashes."""
    return api_server.strip().rstrip("/")
