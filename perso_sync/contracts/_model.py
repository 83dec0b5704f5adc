"""The contract format's typed model: its constants, frozen attrs classes and error.

A contract file is JSON (see ``contracts/README.md`` for the full, documented format)::

    {"format": "perso-contract/1",
     "contracts": [{"name": ..., "provider_states": [...], "interactions": [...], "expect": {...}}]}

Pure data, no I/O: :mod:`perso_sync.contracts._files` reads and writes it,
:mod:`perso_sync.contracts._match` compares what was observed with it. A recorded SSE body is
rendered from its items here, the way a server would send it (and parsed back).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import attrs

from perso_sync import errors as _errors

__all__ = [
    "BODY_KINDS",
    "CALLS",
    "CONVERSE_CALLS",
    "FORMAT_ID",
    "HTTP_METHODS",
    "MATCHER_KINDS",
    "REDACTED",
    "SSE_FRAMINGS",
    "Contract",
    "ContractFile",
    "ContractFormatError",
    "Expectation",
    "Interaction",
    "Matcher",
    "PathSegment",
    "ProviderState",
    "RaisesSpec",
    "RequestSpec",
    "ResponseSpec",
    "SseItem",
    "parse_sse_body",
    "render_sse",
]

FORMAT_ID: Final = "perso-contract/1"
#: The only value a sensitive header (the API key, ``Authorization``, ``Cookie``) may have in a
#: contract. On the wire it means "present, with any non-empty value".
REDACTED: Final = "<redacted>"
MATCHER_KINDS: Final = frozenset({"exact", "type", "regex", "timestamp", "present"})
BODY_KINDS: Final = frozenset({"json", "text", "sse"})
SSE_FRAMINGS: Final = frozenset({"lines", "sse", "crlf"})
HTTP_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

#: The public calls a contract may ask the client to make, and the argument names each accepts.
#: ``client.*`` runs on a :class:`perso_sync.PersoClient`; ``session.*`` on a REST-only
#: :class:`perso_sync.Session` opened for ``target.session_id``; ``llm.*`` on an
#: :class:`perso_sync.LlmProcessor` for ``target.session_id``.
CALLS: Final[Mapping[str, frozenset[str]]] = {
    "client.get_llms": frozenset(),
    "client.get_ttss": frozenset(),
    "client.get_stts": frozenset(),
    "client.get_model_styles": frozenset(),
    "client.get_prompts": frozenset(),
    "client.get_documents": frozenset(),
    "client.get_background_images": frozenset(),
    "client.get_mcp_servers": frozenset(),
    "client.get_text_normalizations": frozenset(),
    "client.get_text_normalization": frozenset({"config_id"}),
    "client.get_all_settings": frozenset(),
    "client.get_intro_message": frozenset({"prompt_id"}),
    "client.get_session_templates": frozenset(),
    "client.get_session_template": frozenset({"session_template_id"}),
    "client.create_session_id": frozenset({"params", "session_template_id"}),
    "client.get_session_info": frozenset({"session_id"}),
    "client.get_ice_servers": frozenset({"session_id"}),
    "client.exchange_sdp": frozenset({"session_id", "offer"}),
    "client.create_session_event": frozenset({"session_id", "event", "detail"}),
    "client.log_session_event": frozenset({"session_id", "detail"}),
    "client.make_tts": frozenset({"session_id", "text", "locale", "output_format"}),
    "client.transcribe": frozenset({"session_id", "wav", "language"}),
    "client.create_session": frozenset({"session_id", "width", "height", "connect_timeout"}),
    "session.transcribe_audio": frozenset({"audio", "language"}),
    "session.transcribe_audio_detailed": frozenset({"audio", "language"}),
    "session.process_tts": frozenset({"message", "resample", "locale", "output_format"}),
    "session.log_session_event": frozenset({"detail"}),
    "session.converse": frozenset({"turns"}),
    "llm.process_llm": frozenset({"message", "earlier", "tools"}),
}

#: ``session.converse`` turns: the session methods a turn may call.
CONVERSE_CALLS: Final = frozenset({"process_chat", "process_llm"})


class ContractFormatError(_errors.PersoError, ValueError):
    """A contract file is malformed; the message names the file and the field."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        super().__init__(f"{source}: {field}: {problem}")
        self.source = source
        self.field = field
        self.problem = problem


# ---------------------------------------------------------------------------------------------
# The typed model


PathSegment: TypeAlias = "str | int"


@attrs.frozen
class Matcher:
    """How a value at one path is compared (the default, without a matcher, is ``exact``)."""

    kind: str
    regex: str | None = None
    min: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"match": self.kind}
        if self.regex is not None:
            out["regex"] = self.regex
        if self.min:
            out["min"] = self.min
        return out


@attrs.frozen
class ProviderState:
    """A precondition the provider must set up before the interaction, e.g.
    ``ProviderState("prompt does not exist", {"prompt_id": "p-404"})``."""

    name: str
    params: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class SseItem:
    """One line of an event stream: a ``data:`` event (``data``) or a raw line (``raw``)."""

    data: Any = None
    raw: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"raw": self.raw} if self.raw is not None else {"data": self.data}


@attrs.frozen
class RequestSpec:
    method: str
    path: str
    query: Mapping[str, str] = attrs.field(factory=dict)
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body_kind: Literal["none", "json", "multipart"] = "none"
    json: Any = None
    #: multipart: ``{"fields": {name: str}, "files": {name: {"filename", "content_type"?,
    #: "base64"}}}``
    multipart: Mapping[str, Any] | None = None


@attrs.frozen
class ResponseSpec:
    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body_kind: Literal["json", "text", "sse"] = "json"
    json: Any = None
    text: str = ""
    sse: tuple[SseItem, ...] = ()
    sse_framing: str = "lines"
    sse_final_newline: bool = True

    def body_bytes(self) -> bytes:
        """The body exactly as a server following this contract sends it."""
        if self.body_kind == "json":
            return json.dumps(self.json).encode()
        if self.body_kind == "text":
            return self.text.encode()
        return render_sse(self.sse, self.sse_framing, self.sse_final_newline)

    def content_type(self) -> str:
        for name, value in self.headers.items():
            if name.lower() == "content-type":
                return value
        return {
            "json": "application/json",
            "text": "text/html; charset=utf-8",
            "sse": "text/event-stream",
        }[self.body_kind]


@attrs.frozen
class Interaction:
    request: RequestSpec
    response: ResponseSpec
    #: path -> matcher; paths start with ``request.`` or ``response.``
    matchers: Mapping[str, Matcher] = attrs.field(factory=dict)
    description: str = ""


@attrs.frozen
class RaisesSpec:
    """The exception the call must raise: exact class name from :mod:`perso_sync.errors`, the
    fields to check (``error_code``, ``code``, ``detail``, ``attr``, ``description``,
    ``message`` = ``str(exc)``), and for wrappers the ``underlying`` exception."""

    cls: str
    fields: Mapping[str, Any] = attrs.field(factory=dict)
    underlying: RaisesSpec | None = None


@attrs.frozen
class Expectation:
    call: str
    args: Mapping[str, Any] = attrs.field(factory=dict)
    #: ``{"session_id": ...}`` for ``session.*`` and ``llm.*`` calls
    target: Mapping[str, Any] = attrs.field(factory=dict)
    has_result: bool = False
    result: Any = None
    raises: RaisesSpec | None = None
    #: path -> matcher; paths start with ``result`` or ``raises``
    matchers: Mapping[str, Matcher] = attrs.field(factory=dict)


@attrs.frozen
class Contract:
    name: str
    source: str
    interactions: tuple[Interaction, ...]
    expect: Expectation
    provider_states: tuple[ProviderState, ...] = ()
    description: str = ""
    #: requests may reach the server in any order (e.g. get_all_settings fetches concurrently)
    unordered: bool = False

    @property
    def id(self) -> str:
        """``file-stem::name``: a stable test id."""
        return f"{Path(self.source).stem}::{self.name}"


@attrs.frozen
class ContractFile:
    source: str
    contracts: tuple[Contract, ...]


# ---------------------------------------------------------------------------------------------
# SSE bodies


def render_sse(
    items: Sequence[SseItem], framing: str = "lines", final_newline: bool = True
) -> bytes:
    """Render events as a server sends them: ``lines`` = one ``data:`` line per event (what the
    platform sends), ``sse`` = standard framing with a blank line after each event, ``crlf`` =
    standard framing with ``\\r\\n`` line ends."""
    eol = "\r\n" if framing == "crlf" else "\n"
    sep = eol if framing == "lines" else eol * 2
    lines = [
        item.raw if item.raw is not None else "data: " + json.dumps(item.data, ensure_ascii=False)
        for item in items
    ]
    text = sep.join(lines)
    if final_newline and lines:
        text += sep
    return text.encode()


def parse_sse_body(body: bytes) -> list[SseItem]:
    """Split an event-stream body back into items, whatever its framing: blank lines and ``:``
    comments are framing; a ``data:`` line holding JSON is an event; anything else is raw."""
    items: list[SseItem] = []
    for line in body.decode("utf-8", errors="replace").split("\n"):
        line = line.rstrip("\r")
        if not line.strip() or line.startswith(":"):
            continue
        if line.startswith("data:"):
            try:
                items.append(SseItem(data=json.loads(line[5:].strip())))
                continue
            except json.JSONDecodeError:
                pass
        items.append(SseItem(raw=line))
    return items
