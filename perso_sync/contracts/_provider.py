"""Provider side: replay a contract's requests against a running mock server and check answers.

Each provider state of the contract is set up through the mock's Python API (catalog edits,
faults, sessions, scripted LLM replies); then every recorded request is sent with plain
``requests`` and the answer is compared with the recorded response under its matchers.

Ids the mock generates itself (session ids) cannot be chosen by the contract: the state
``session exists`` creates a session and maps the contract's example id to the real one, and
every request is rewritten with that mapping before it is sent (Pact's "provider-state injected
values").

The mock server is passed in (``mock_server.MockPersoServer`` or the ``perso_mock`` fixture); its
modules are imported only when a state needs them, so ``perso_sync`` never depends on it.
"""

from __future__ import annotations

import base64
import copy
import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from perso_sync.contracts._match import Mismatch, check_response
from perso_sync.contracts._model import REDACTED, Contract, Interaction, ProviderState

__all__ = ["PROVIDER_STATES", "ProviderSetup", "UnknownProviderStateError", "run_provider"]


class UnknownProviderStateError(LookupError):
    """A contract names a provider state this runner does not know how to set up."""


@attrs.define
class ProviderSetup:
    """What the states produced: id substitutions and request overrides."""

    api_key: str
    substitutions: dict[str, str] = attrs.field(factory=dict)
    real_offer: bool = False


StateHandler = Callable[[Any, Mapping[str, Any], ProviderSetup], None]


def _catalog_has(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
    setattr(server.catalog, params["kind"], copy.deepcopy(list(params["items"])))


def _catalog_lacks(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
    kind = params["kind"]
    id_key = _catalog_module().ID_KEYS[kind]
    items = [item for item in getattr(server.catalog, kind) if item.get(id_key) != params["id"]]
    setattr(server.catalog, kind, items)


def _organization_lacks(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
    # The type exists platform-wide (listed) but is not assigned to the organization.
    kind, name = params["kind"], params["name"]
    items = getattr(server.catalog, kind)
    if not any(item.get("name") == name for item in items):
        items.append(copy.deepcopy(dict(params.get("item") or {"name": name})))
    assigned = server.catalog.organization.get(kind, [])
    server.catalog.organization[kind] = [n for n in assigned if n != name]


def _organization_has(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
    assigned = server.catalog.organization.setdefault(params["kind"], [])
    for name in params["names"]:
        if name not in assigned:
            assigned.append(name)


def _organization_lacks_feature(
    server: Any, params: Mapping[str, Any], setup: ProviderSetup
) -> None:
    features = server.catalog.organization.get("features", [])
    server.catalog.organization["features"] = [f for f in features if f != params["feature"]]


def _session_exists(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
    actual = server.create_session_id(**dict(params.get("params", {})))
    session = server.sessions[actual]
    if "capability" in params:
        session.capability = list(params["capability"])
    setup.substitutions[params["session_id"]] = actual


def _session_does_not_exist(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
    if params["session_id"] in server.sessions:
        raise UnknownProviderStateError(f"session {params['session_id']!r} exists in the mock")


def _session_attr(name: str, param: str) -> StateHandler:
    def handler(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
        sid = setup.substitutions.get(params["session_id"], params["session_id"])
        setattr(server.sessions[sid], name, copy.deepcopy(params[param]))

    return handler


def _session_offer_is_real(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
    setup.real_offer = True


def _llm_replies(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
    script = importlib.import_module("mock_server.llm_script")
    sid = setup.substitutions.get(params["session_id"], params["session_id"])
    follow_up = params.get("follow_up_events")
    rule = script.Rule(
        pattern="",
        events=copy.deepcopy(list(params["events"])),
        follow_up_events=None if follow_up is None else copy.deepcopy(list(follow_up)),
        done=False,
    )
    server.sessions[sid].llm_script = script.LlmScript(rules=[rule], delay=0.0)


def _llm_framing(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
    server.catalog.settings["llm_framing"] = params["framing"]
    for session in server.sessions.values():
        if session.llm_script is not None:
            session.llm_script.framing = params["framing"]


def _fault(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
    faults = server.faults
    endpoint = params["endpoint"]
    kind = params.get("kind")
    if kind == "html":
        faults.html(endpoint, params.get("status", 502))
    elif kind == "empty":
        faults.empty(endpoint, params.get("status", 504))
    elif kind == "sse_garbage":
        faults.sse_garbage(params.get("line", "this line is not server-sent events"))
    elif kind is None:
        fields: dict[str, Any] = {}
        if "body" in params:
            fields["body"] = copy.deepcopy(params["body"])
        faults.fail(endpoint, params.get("status", 500), **fields)
    else:
        raise UnknownProviderStateError(f"unknown fault kind {kind!r}")


def _api_key_is_wrong(server: Any, params: Mapping[str, Any], setup: ProviderSetup) -> None:
    setup.api_key = "wrong-" + str(server.api_key)


#: Every provider state a contract may name, and how it is set up on the mock. See
#: ``contracts/README.md`` for their parameters.
PROVIDER_STATES: Mapping[str, StateHandler] = {
    "catalog has": _catalog_has,
    "catalog lacks": _catalog_lacks,
    "organization lacks": _organization_lacks,
    "organization has": _organization_has,
    "organization lacks feature": _organization_lacks_feature,
    "session exists": _session_exists,
    "session does not exist": _session_does_not_exist,
    "session has ice servers": _session_attr("ice_servers", "ice_servers"),
    "session transcribes as": _session_attr("stt_text", "text"),
    "session offer is real": _session_offer_is_real,
    "llm replies": _llm_replies,
    "llm framing": _llm_framing,
    "fault": _fault,
    "api key is wrong": _api_key_is_wrong,
}


def _catalog_module() -> Any:
    return importlib.import_module("mock_server.catalog")


def apply_states(server: Any, states: Sequence[ProviderState]) -> ProviderSetup:
    """Set up every state on ``server`` in order; return the substitutions they produced."""
    setup = ProviderSetup(api_key=str(server.api_key))
    for state in states:
        handler = PROVIDER_STATES.get(state.name)
        if handler is None:
            raise UnknownProviderStateError(
                f"unknown provider state {state.name!r}; known: {sorted(PROVIDER_STATES)}"
            )
        handler(server, state.params, setup)
    return setup


def _substitute(value: Any, subs: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for example, actual in subs.items():
            value = value.replace(example, actual)
        return value
    if isinstance(value, list):
        return [_substitute(item, subs) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, subs) for key, item in value.items()}
    return value


def run_provider(contract: Contract, server: Any, *, timeout: float = 10.0) -> list[Mismatch]:
    """Set up the contract's states on a fresh mock ``server``, send each recorded request and
    compare each answer with the recorded response; return every mismatch."""
    import requests

    setup = apply_states(server, contract.provider_states)
    out: list[Mismatch] = []
    with requests.Session() as http:
        for index, interaction in enumerate(contract.interactions):
            kwargs = _request_kwargs(interaction, setup)
            kwargs["url"] = server.url + kwargs["url"]
            try:
                response = http.request(timeout=timeout, **kwargs)
            except requests.RequestException as exc:
                out.append(Mismatch(f"interactions[{index}]", f"request failed: {exc!r}"))
                continue
            for mismatch in check_response(
                interaction, response.status_code, dict(response.headers), response.content
            ):
                out.append(Mismatch(f"interactions[{index}].{mismatch.path}", mismatch.problem))
    return out


def _request_kwargs(interaction: Interaction, setup: ProviderSetup) -> dict[str, Any]:
    spec = interaction.request
    subs = setup.substitutions
    headers = {
        name: (setup.api_key if value == REDACTED else value)
        for name, value in spec.headers.items()
    }
    kwargs: dict[str, Any] = {
        "method": spec.method,
        "url": _substitute(spec.path, subs),
        "params": _substitute(dict(spec.query), subs),
        "headers": headers,
    }
    if spec.body_kind == "json":
        body = _substitute(copy.deepcopy(spec.json), subs)
        if setup.real_offer and isinstance(body, dict) and "client_sdp" in body:
            body["client_sdp"] = real_offer()
        kwargs["data"] = json.dumps(body).encode()
    elif spec.body_kind == "multipart":
        multipart = spec.multipart or {}
        headers.pop("Content-Type", None)
        kwargs["data"] = dict(multipart.get("fields", {}))
        kwargs["files"] = {
            name: (
                file["filename"],
                base64.b64decode(file["base64"]),
                file.get("content_type", "application/octet-stream"),
            )
            for name, file in multipart.get("files", {}).items()
        }
    return kwargs


def real_offer() -> dict[str, str]:
    """A genuine WebRTC offer (audio + video recvonly, the ``message`` data channel), made with
    aiortc, for the mock's answerer to parse."""
    import asyncio

    aiortc = importlib.import_module("aiortc")

    async def make() -> dict[str, str]:
        pc = aiortc.RTCPeerConnection()
        try:
            pc.createDataChannel("message", protocol="message")
            pc.addTransceiver("audio", direction="recvonly")
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            return {"type": "offer", "sdp": str(pc.localDescription.sdp)}
        finally:
            await pc.close()

    return asyncio.run(make())
