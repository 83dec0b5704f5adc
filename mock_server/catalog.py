"""The mock platform's data: settings lists, session templates and the organization.

A :class:`Catalog` is plain, mutable JSON-like data (lists of dicts), so tests edit it directly::

    server.catalog.prompts.append({"prompt_id": "p-new", "name": "New", "system_prompt": "..."})
    server.catalog.organization["llm_types"].remove("gpt-4.1")      # -> not_in_organization
    server.catalog.organization["features"].remove("mcp")          # -> invalid "... not found"
    server.catalog.organization["max_active_sessions"] = 1
    server.catalog.settings["ice_servers"] = [{"urls": "stun:stun.example.org"}]

The seeded data lives in ``catalog.json`` beside this module. ``Catalog.load(path)`` reads a JSON
file of the same shape; top-level keys present in the file replace the seeded ones, absent keys
keep the seeded values (so a file may hold only ``{"prompts": [...]}``).

Kinds (attribute = JSON key):

- ``llm_types``, ``tts_types``, ``stt_types``, ``model_styles``, ``prompts``, ``documents``,
  ``background_images``, ``mcp_servers``, ``text_normalizations``: the settings lists, served as
  is (model styles filtered by ``platform_type`` when the query asks).
- ``text_normalization_files``: ``{config_id: csv_text}``, served at the download ``file_url``.
- ``mcp_tools``: ``{mcpserver_id: {tool_name: result}}``: what each remote MCP server's tools
  return when the scripted assistant calls them (mock-only, never served).
- ``session_templates``: templates whose references are ids/names (``"prompt": "prompt-x"``),
  expanded into the full SessionTemplate shape when served; a dict in place of an id is served
  verbatim, and an unknown id becomes a minimal stub, so tests can build broken templates.
- ``organization``: ``llm_types`` / ``tts_types`` / ``stt_types`` assigned to the organization
  (other types exist platform-wide but give ``not_in_organization``), ``features`` (org-level
  features: ``document``, ``background_image``, ``mcp``, ``text_normalization``) and
  ``max_active_sessions`` (``None`` = unlimited).
- ``settings``: ``ice_servers`` (default ``[]``), ``session_expiry_sec`` (a session not connected
  within this time is TERMINATED / SESSION_EXPIRED_BEFORE_CONNECTION), ``llm_delay`` (seconds
  between LLM deltas), ``llm_framing`` (``"platform"`` or ``"sse"``), ``stt_default_text``
  (transcript of audio the mock did not synthesize), ``strict_capabilities`` (when true, TTS/STT/
  LLM calls on a session without that capability get 400), ``tts_max_chars`` (the longest TTS
  text, default 5000; longer → 400 ``max_length`` on ``text``).
"""

from __future__ import annotations

import copy
import json
import os
from importlib import resources
from typing import Any

LIST_KINDS = (
    "llm_types",
    "tts_types",
    "stt_types",
    "model_styles",
    "prompts",
    "documents",
    "background_images",
    "mcp_servers",
    "text_normalizations",
    "session_templates",
)
MAP_KINDS = ("organization", "settings", "text_normalization_files", "mcp_tools")
ALL_KINDS = LIST_KINDS + MAP_KINDS

# Which key identifies an item of each kind (what session-creation params refer to).
ID_KEYS = {
    "llm_types": "name",
    "tts_types": "name",
    "stt_types": "name",
    "model_styles": "name",
    "prompts": "prompt_id",
    "documents": "document_id",
    "background_images": "backgroundimage_id",
    "mcp_servers": "mcpserver_id",
    "text_normalizations": "textnormalizationconfig_id",
    "session_templates": "sessiontemplate_id",
}

# Reference field (of a session template, and of a session-creation body) -> catalog kind of
# the item it names. The order is the order in which session creation checks them.
REFERENCE_KINDS = {
    "model_style": "model_styles",
    "prompt": "prompts",
    "document": "documents",
    "background_image": "background_images",
    "llm_type": "llm_types",
    "tts_type": "tts_types",
    "stt_type": "stt_types",
    "text_normalization_config": "text_normalizations",
    "stt_text_normalization_config": "text_normalizations",
}

CAPABILITY_DESCRIPTIONS = {
    "LLM": "Large language model",
    "TTS": "Text to speech",
    "STT": "Speech to text",
    "STF_ONPREMISE": "Speech to face (on-premise)",
    "STF_WEBRTC": "Speech to face (WebRTC)",
}


class CatalogError(ValueError):
    """A catalog file that cannot be read or does not have the catalog's shape."""


def _seed_data() -> dict[str, Any]:
    text = resources.files("mock_server").joinpath("catalog.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


class Catalog:
    """Mutable seeded data of the mock platform (see the module docstring)."""

    llm_types: list[dict[str, Any]]
    tts_types: list[dict[str, Any]]
    stt_types: list[dict[str, Any]]
    model_styles: list[dict[str, Any]]
    prompts: list[dict[str, Any]]
    documents: list[dict[str, Any]]
    background_images: list[dict[str, Any]]
    mcp_servers: list[dict[str, Any]]
    text_normalizations: list[dict[str, Any]]
    session_templates: list[dict[str, Any]]
    organization: dict[str, Any]
    settings: dict[str, Any]
    text_normalization_files: dict[str, str]
    mcp_tools: dict[str, dict[str, Any]]

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        merged = _seed_data()
        if data is not None:
            unknown = set(data) - set(ALL_KINDS)
            if unknown:
                raise CatalogError(f"unknown catalog keys: {sorted(unknown)}")
            for key, value in data.items():
                expected = list if key in LIST_KINDS else dict
                if not isinstance(value, expected):
                    raise CatalogError(f"catalog key {key!r} must be a {expected.__name__}")
                if key in ("organization", "settings") and isinstance(value, dict):
                    # Partial dicts keep the seeded defaults for keys they leave out.
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
        for key in ALL_KINDS:
            setattr(self, key, copy.deepcopy(merged.get(key, [] if key in LIST_KINDS else {})))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Catalog:
        """Read a catalog JSON file (keys present replace the seeded ones)."""
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as exc:
            raise CatalogError(f"cannot read catalog {os.fspath(path)!r}: {exc}") from None
        if not isinstance(data, dict):
            raise CatalogError("a catalog file must hold a JSON object")
        return cls(data)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of every kind, in the file's shape."""
        return {key: copy.deepcopy(getattr(self, key)) for key in ALL_KINDS}

    def copy(self) -> Catalog:
        """An independent deep copy."""
        return Catalog(self.to_dict())

    def restore(self, other: Catalog) -> None:
        """Make this catalog equal to ``other`` (this Catalog object stays the one tests hold)."""
        for key in ALL_KINDS:
            setattr(self, key, copy.deepcopy(getattr(other, key)))

    def find(self, kind: str, ident: Any) -> dict[str, Any] | None:
        """The item of ``kind`` whose id key equals ``ident``, or None."""
        key = ID_KEYS[kind]
        items: list[dict[str, Any]] = getattr(self, kind)
        for item in items:
            if isinstance(item, dict) and item.get(key) == ident:
                return item
        return None

    def model_styles_for(self, platform_type: str | None) -> list[dict[str, Any]]:
        """The model styles of ``platform_type`` (``"webrtc"`` when a style names none); all
        of them when ``platform_type`` is empty."""
        if not platform_type:
            return list(self.model_styles)
        return [s for s in self.model_styles if s.get("platform_type", "webrtc") == platform_type]

    def mcp_tool_result(self, server_ids: list[str], tool_name: str) -> tuple[bool, Any]:
        """(found, result) of a tool offered by one of the given MCP servers."""
        for server_id in server_ids:
            tools = self.mcp_tools.get(server_id) or {}
            if tool_name in tools:
                return True, copy.deepcopy(tools[tool_name])
        return False, None

    def mcp_tool_names(self, server_ids: list[str]) -> list[str]:
        """The names of the tools the given MCP servers offer, in catalog order."""
        names: list[str] = []
        for server_id in server_ids:
            names.extend((self.mcp_tools.get(server_id) or {}).keys())
        return names

    def expand_template(self, template: dict[str, Any]) -> dict[str, Any]:
        """The served SessionTemplate: references replaced by the full objects."""
        out = copy.deepcopy(template)
        for field, kind in REFERENCE_KINDS.items():
            ref = out.get(field)
            if isinstance(ref, str):
                found = self.find(kind, ref)
                out[field] = copy.deepcopy(found) if found else {ID_KEYS[kind]: ref}
        caps = out.get("capability", [])
        out["capability"] = [
            {"name": c, "description": CAPABILITY_DESCRIPTIONS.get(c)} if isinstance(c, str) else c
            for c in caps
        ]
        servers = out.get("mcp_servers")
        if isinstance(servers, list):
            expanded = []
            for ref in servers:
                found = self.find("mcp_servers", ref) if isinstance(ref, str) else None
                if isinstance(ref, str):
                    expanded.append(copy.deepcopy(found) if found else {"mcpserver_id": ref})
                else:
                    expanded.append(ref)
            out["mcp_servers"] = expanded
        for key in ("text_normalization_locale", "stt_text_normalization_locale"):
            out.setdefault(key, None)
        for key in ("text_normalization_config", "stt_text_normalization_config"):
            out.setdefault(key, None)
        return out

    def normalization_rules(self, config_id: str | None) -> list[tuple[str, str]]:
        """(source, target) pairs of a text-normalization CSV (header row skipped)."""
        if not config_id:
            return []
        text = self.text_normalization_files.get(config_id)
        if not text:
            return []
        import csv
        import io

        rows = list(csv.reader(io.StringIO(text)))
        return [(r[0], r[1]) for r in rows[1:] if len(r) >= 2 and r[0]]


def normalize_text(text: str, rules: list[tuple[str, str]]) -> str:
    """Apply normalization rules word by word (a mock of the platform's normalizer)."""
    if not rules:
        return text
    mapping = dict(rules)
    words = text.split(" ")
    return " ".join(mapping.get(word, word) for word in words)
