"""Session creation like the platform validates it, SessionInfo, and the status lifecycle."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from _http_helpers import FULL_PARAMS, TIMEOUT, create, first_error, get, post

from mock_server import MockPersoServer
from mock_server.validation import SessionParamsError


def info(server: MockPersoServer, session_id: str) -> dict[str, Any]:
    response = requests.get(f"{server.url}/api/v1/session/{session_id}/", timeout=TIMEOUT)
    assert response.status_code == 200
    return dict(response.json())


def test_created_session_has_the_session_info_shape(perso_mock: MockPersoServer) -> None:
    response = create(perso_mock, padding_left=-0.5, background_image="bg-office")
    assert response.status_code == 201
    session_id = response.json()["session_id"]
    body = info(perso_mock, session_id)
    assert set(body) >= {
        "session_id", "client_sdp", "server_sdp", "prompt", "document", "llm_type",
        "model_style", "tts_type", "ice_servers", "status", "termination_reason",
        "duration_sec", "created_at", "padding_left", "padding_top", "padding_height",
        "background_image", "extra_data", "capability",
    }  # fmt: skip
    assert body["session_id"] == session_id
    assert body["status"] == "CREATED"
    assert body["termination_reason"] is None
    assert [c["name"] for c in body["capability"]] == ["STF_WEBRTC", "LLM", "TTS", "STT"]
    assert body["prompt"]["intro_message"].startswith("Welcome")
    assert body["llm_type"] == {"name": "gpt-4o-mini"}
    assert set(body["model_style"]) == {"name", "model", "model_file", "style", "file"}
    assert body["tts_type"]["voice"] == "en-US-JennyNeural"
    assert (body["padding_left"], body["padding_top"], body["padding_height"]) == (-0.5, 0, 1)
    assert body["background_image"]["backgroundimage_id"] == "bg-office"
    assert body["created_at"].endswith("Z")
    assert body["duration_sec"] == 0


def test_capability_is_taken_from_the_request(perso_mock: MockPersoServer) -> None:
    response = create(perso_mock, using_stf_webrtc=False, capability=["LLM"])
    body = info(perso_mock, response.json()["session_id"])
    assert body["capability"] == [{"name": "LLM", "description": "Large language model"}]


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("prompt", "prompt-nope", "Object with prompt_id=prompt-nope does not exist."),
        ("model_style", "style-nope", "Object with name=style-nope does not exist."),
        ("document", "doc-nope", "Object with document_id=doc-nope does not exist."),
        ("background_image", "bg-nope", "Object with backgroundimage_id=bg-nope does not exist."),
        ("llm_type", "llm-nope", "Object with name=llm-nope does not exist."),
        ("tts_type", "tts-nope", "Object with name=tts-nope does not exist."),
        ("stt_type", "stt-nope", "Object with name=stt-nope does not exist."),
        (
            "text_normalization_config",
            "tnc-nope",
            "Object with textnormalizationconfig_id=tnc-nope does not exist.",
        ),
        (
            "stt_text_normalization_config",
            "tnc-nope",
            "Object with textnormalizationconfig_id=tnc-nope does not exist.",
        ),
        ("mcp_servers", ["mcp-nope"], 'Invalid pk "mcp-nope" - object does not exist.'),
    ],
)
def test_unknown_reference_is_does_not_exist_with_attr(
    perso_mock: MockPersoServer, field: str, value: Any, detail: str
) -> None:
    response = create(perso_mock, **{field: value})
    assert response.status_code == 400
    assert response.json()["type"] == "client_error"
    assert first_error(response) == {"code": "does_not_exist", "detail": detail, "attr": field}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("llm_type", "claude-3-7-sonnet"),
        ("tts_type", "typecast-minji"),
        ("stt_type", "deepgram-nova-3"),
    ],
)
def test_type_outside_the_organization_is_not_in_organization(
    perso_mock: MockPersoServer, field: str, value: str
) -> None:
    response = create(perso_mock, **{field: value})
    assert response.status_code == 400
    error = first_error(response)
    assert (error["code"], error["attr"]) == ("not_in_organization", field)


@pytest.mark.parametrize(
    ("feature", "params"),
    [
        ("mcp", {"mcp_servers": ["mcp-calendar"]}),
        ("text_normalization", {"text_normalization_config": "tnc-en-numbers"}),
        ("document", {"document": "doc-faq"}),
        ("background_image", {"background_image": "bg-lobby"}),
    ],
)
def test_feature_not_assigned_to_the_organization_is_invalid_not_found(
    perso_mock: MockPersoServer, feature: str, params: dict[str, Any]
) -> None:
    assert create(perso_mock, **params).status_code == 201
    perso_mock.catalog.organization["features"].remove(feature)
    response = create(perso_mock, **params)
    assert response.status_code == 400
    error = first_error(response)
    assert error["code"] == "invalid"
    assert error["detail"].endswith("not found.")


@pytest.mark.parametrize(
    ("params", "code", "attr"),
    [
        ({"padding_left": -1.5}, "min_value", "padding_left"),
        ({"padding_left": 1.01}, "max_value", "padding_left"),
        ({"padding_top": -0.1}, "min_value", "padding_top"),
        ({"padding_top": 2}, "max_value", "padding_top"),
        ({"padding_height": 5.5}, "max_value", "padding_height"),
        ({"padding_height": "tall"}, "invalid", "padding_height"),
        (
            {"stt_text_normalization_locale": "x" * 11},
            "max_length",
            "stt_text_normalization_locale",
        ),
        ({"text_normalization_locale": "y" * 11}, "max_length", "text_normalization_locale"),
        ({"prompt": ...}, "required", "prompt"),
        ({"model_style": ...}, "required", "model_style"),
        ({"using_stf_webrtc": ...}, "required", "using_stf_webrtc"),
        ({"using_stf_webrtc": "yes"}, "invalid", "using_stf_webrtc"),
        ({"capability": ["TELEPATHY"]}, "invalid_choice", "capability"),
    ],
)
def test_bad_params_are_validation_errors(
    perso_mock: MockPersoServer, params: dict[str, Any], code: str, attr: str
) -> None:
    response = create(perso_mock, **params)
    assert response.status_code == 400
    assert response.json()["type"] == "validation_error"
    error = first_error(response)
    assert (error["code"], error["attr"]) == (code, attr)


def test_boundary_values_and_null_locales_are_accepted(perso_mock: MockPersoServer) -> None:
    response = create(
        perso_mock,
        padding_left=-1.0,
        padding_top=1.0,
        padding_height=5.0,
        stt_text_normalization_locale="x" * 10,
        text_normalization_locale=None,
    )
    assert response.status_code == 201


def test_prompt_requiring_a_document(perso_mock: MockPersoServer) -> None:
    response = create(perso_mock, prompt="prompt-manual-qa")
    assert first_error(response)["attr"] == "document"
    assert create(perso_mock, prompt="prompt-manual-qa", document="doc-product-manual").ok


def test_max_active_sessions_quota(perso_mock: MockPersoServer) -> None:
    perso_mock.catalog.organization["max_active_sessions"] = 2
    first = create(perso_mock).json()["session_id"]
    assert create(perso_mock).status_code == 201
    refused = create(perso_mock)
    assert refused.status_code == 400
    assert first_error(refused)["code"] == "MAX_ACTIVE_SESSION_QUOTA_EXCEEDED"
    perso_mock.sessions[first].terminate()
    assert create(perso_mock).status_code == 201


def test_non_json_body_is_a_parse_error(perso_mock: MockPersoServer) -> None:
    response = post(
        perso_mock,
        "/api/v1/session/",
        data=b"{oops",
        headers={"PersoLive-APIKey": perso_mock.api_key, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert first_error(response)["code"] == "parse_error"


def test_rest_only_session_lifecycle_through_events(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock, using_stf_webrtc=False).json()["session_id"]
    events = f"/api/v1/session/{session_id}/event/create/"
    post(perso_mock, events, json={"event": "SESSION_START", "detail": ""})
    assert info(perso_mock, session_id)["status"] == "IN_PROGRESS"
    post(perso_mock, events, json={"event": "SESSION_DURING", "detail": ""})
    post(perso_mock, events, json={"event": "SESSION_END", "detail": ""})
    body = info(perso_mock, session_id)
    assert (body["status"], body["termination_reason"]) == ("TERMINATED", "GRACEFUL_TERMINATION")


def test_session_expires_before_connection(perso_mock: MockPersoServer) -> None:
    perso_mock.catalog.settings["session_expiry_sec"] = 0
    session_id = create(perso_mock).json()["session_id"]
    body = info(perso_mock, session_id)
    assert body["status"] == "TERMINATED"
    assert body["termination_reason"] == "SESSION_EXPIRED_BEFORE_CONNECTION"


def test_peer_states_drive_the_status(perso_mock: MockPersoServer) -> None:
    # What the WebRTC answerer reports through its on_state callback.
    ctx = perso_mock.context
    lost = create(perso_mock).json()["session_id"]
    ctx.on_peer_state(lost, "connected")
    assert info(perso_mock, lost)["status"] == "IN_PROGRESS"
    ctx.on_peer_state(lost, "lost")
    assert info(perso_mock, lost)["termination_reason"] == "SESSION_LOST_AFTER_CONNECTION"
    closed = create(perso_mock).json()["session_id"]
    ctx.on_peer_state(closed, "connected")
    ctx.on_peer_state(closed, "closed")
    assert info(perso_mock, closed)["termination_reason"] == "GRACEFUL_TERMINATION"


@pytest.mark.parametrize(
    "body",
    [{}, {"client_sdp": "v=0"}, {"client_sdp": {"type": "answer", "sdp": "v=0"}}],
)
def test_exchange_rejects_a_malformed_offer(perso_mock: MockPersoServer, body: Any) -> None:
    session_id = create(perso_mock).json()["session_id"]
    response = post(perso_mock, f"/api/v1/session/{session_id}/exchange/", json=body)
    assert response.status_code == 400
    assert first_error(response)["attr"] == "client_sdp"


def test_exchange_of_a_terminated_session_is_refused(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    perso_mock.sessions[session_id].terminate()
    offer = {"client_sdp": {"type": "offer", "sdp": "v=0\r\n"}}
    response = post(perso_mock, f"/api/v1/session/{session_id}/exchange/", json=offer)
    assert response.status_code == 400
    assert "TERMINATED" in first_error(response)["detail"]


def test_create_session_id_shortcut_validates_too(perso_mock: MockPersoServer) -> None:
    session_id = perso_mock.create_session_id()
    assert info(perso_mock, session_id)["capability"][0]["name"] == "STF_WEBRTC"
    rest = perso_mock.create_session_id(using_stf_webrtc=False, stt_type=None)
    assert [c["name"] for c in info(perso_mock, rest)["capability"]] == ["LLM", "TTS"]
    with pytest.raises(SessionParamsError) as caught:
        perso_mock.create_session_id(prompt="prompt-nope")
    assert caught.value.body["errors"][0]["code"] == "does_not_exist"


def test_session_template_can_be_turned_into_params(perso_mock: MockPersoServer) -> None:
    # What a client does with Form B: the template's ids are valid creation params.
    template = get(perso_mock, "/api/v1/session_template/tmpl-rest-only/").json()
    params = {
        "using_stf_webrtc": False,
        "model_style": template["model_style"]["name"],
        "prompt": template["prompt"]["prompt_id"],
        "llm_type": template["llm_type"]["name"],
        "stt_text_normalization_config": template["stt_text_normalization_config"][
            "textnormalizationconfig_id"
        ],
        "stt_text_normalization_locale": template["stt_text_normalization_locale"],
    }
    assert create(perso_mock, **{**{k: ... for k in FULL_PARAMS}, **params}).status_code == 201


def test_absurdly_deep_json_is_a_parse_error_not_a_crash(perso_mock: MockPersoServer) -> None:
    resp = requests.post(
        f"{perso_mock.url}/api/v1/session/",
        data="[" * 50_000,
        headers={"PersoLive-APIKey": perso_mock.api_key, "Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 400
    assert perso_mock.journal.requests(endpoint="create_session")
