"""The mock's account-scoped REST endpoints and auth, checked with plain requests."""

from __future__ import annotations

import pytest
import requests
from _http_helpers import TIMEOUT, create, first_error, get, key_headers, post

from mock_server import MockPersoServer

SETTINGS_PATHS = {
    "/api/v1/settings/llm_type/": ("llm_types", "name"),
    "/api/v1/settings/tts_type/": ("tts_types", "name"),
    "/api/v1/settings/stt_type/": ("stt_types", "name"),
    "/api/v1/settings/modelstyle/": ("model_styles", "name"),
    "/api/v1/background_image/": ("background_images", "backgroundimage_id"),
    "/api/v1/prompt/": ("prompts", "prompt_id"),
    "/api/v1/document/": ("documents", "document_id"),
    "/api/v1/settings/mcp_type/": ("mcp_servers", "mcpserver_id"),
    "/api/v1/settings/text_normalization_config/": (
        "text_normalizations",
        "textnormalizationconfig_id",
    ),
    "/api/v1/session_template/": ("session_templates", "sessiontemplate_id"),
}


@pytest.mark.parametrize("path", sorted(SETTINGS_PATHS))
def test_each_settings_list_is_served_with_the_key(perso_mock: MockPersoServer, path: str) -> None:
    kind, id_key = SETTINGS_PATHS[path]
    response = get(perso_mock, path)
    assert response.status_code == 200
    items = response.json()
    assert [item[id_key] for item in items] == [
        item[id_key] for item in getattr(perso_mock.catalog, kind)
    ]
    assert len(items) >= 2


@pytest.mark.parametrize("path", ["/api/v1/prompt/", "/api/v1/session/"])
def test_missing_key_is_401_with_the_standard_error_body(
    perso_mock: MockPersoServer, path: str
) -> None:
    response = requests.request(
        "GET" if path.endswith("prompt/") else "POST", perso_mock.url + path, timeout=TIMEOUT
    )
    assert response.status_code == 401
    assert response.json()["type"] == "client_error"
    assert first_error(response)["code"] == "not_authenticated"


def test_wrong_key_is_401_and_never_echoed(perso_mock: MockPersoServer) -> None:
    response = get(perso_mock, "/api/v1/prompt/", headers={"PersoLive-APIKey": "wrong-key"})
    assert response.status_code == 401
    assert first_error(response)["code"] == "authentication_failed"
    assert "wrong-key" not in response.text
    assert perso_mock.api_key not in response.text


def test_catalog_has_the_variety_clients_need(perso_mock: MockPersoServer) -> None:
    catalog = perso_mock.catalog
    assert len(catalog.llm_types) >= 3
    assert len(catalog.tts_types) >= 3
    assert len(catalog.stt_types) >= 2
    assert any(s["platform_type"] != "webrtc" for s in catalog.model_styles)
    assert any(p["intro_message"] for p in catalog.prompts)
    templates = get(perso_mock, "/api/v1/session_template/").json()
    platform_types = {t["model_style"]["platform_type"] for t in templates}
    assert platform_types == {"webrtc", "onpremise"}


def test_model_styles_filtered_by_platform_type(perso_mock: MockPersoServer) -> None:
    everything = get(perso_mock, "/api/v1/settings/modelstyle/").json()
    webrtc = get(perso_mock, "/api/v1/settings/modelstyle/?platform_type=webrtc").json()
    assert len(webrtc) < len(everything)
    assert {s["platform_type"] for s in webrtc} == {"webrtc"}


def test_catalog_edits_show_at_once(perso_mock: MockPersoServer) -> None:
    perso_mock.catalog.llm_types.append({"name": "my-llm", "service": "custom"})
    names = [item["name"] for item in get(perso_mock, "/api/v1/settings/llm_type/").json()]
    assert names[-1] == "my-llm"


def test_template_is_expanded_to_the_full_schema(perso_mock: MockPersoServer) -> None:
    template = get(perso_mock, "/api/v1/session_template/tmpl-webrtc-full/").json()
    assert template["prompt"]["prompt_id"] == "prompt-concierge"
    assert template["prompt"]["intro_message"]
    assert template["capability"][0] == {
        "name": "STF_WEBRTC",
        "description": "Speech to face (WebRTC)",
    }
    assert template["model_style"]["platform_type"] == "webrtc"
    assert template["document"]["document_id"] == "doc-faq"
    assert template["mcp_servers"][0]["mcpserver_id"] == "mcp-docs-search"
    assert template["text_normalization_config"]["textnormalizationconfig_id"] == "tnc-en-numbers"
    assert template["stt_text_normalization_locale"] is None
    minimal = get(perso_mock, "/api/v1/session_template/tmpl-webrtc-minimal/").json()
    assert minimal["document"] is None
    assert minimal["background_image"] is None


def test_unknown_template_is_404(perso_mock: MockPersoServer) -> None:
    response = get(perso_mock, "/api/v1/session_template/nope/")
    assert response.status_code == 404
    assert first_error(response)["code"] == "not_found"


def test_text_normalization_csv_with_etag_and_304(perso_mock: MockPersoServer) -> None:
    path = "/api/v1/settings/text_normalization_config/tnc-en-numbers/download/"
    download = get(perso_mock, path).json()
    assert download["config_id"] == "tnc-en-numbers"
    assert download["config_name"] == "English numbers and units"
    assert download["file_url"].startswith(perso_mock.url + "/")
    first = requests.get(download["file_url"], timeout=TIMEOUT)
    assert first.status_code == 200
    assert first.text.splitlines()[0] == "source,target"
    etag = first.headers["ETag"]
    again = requests.get(download["file_url"], headers={"If-None-Match": etag}, timeout=TIMEOUT)
    assert again.status_code == 304
    assert again.content == b""
    perso_mock.catalog.text_normalization_files["tnc-en-numbers"] += "cm,centimeters\n"
    changed = requests.get(download["file_url"], headers={"If-None-Match": etag}, timeout=TIMEOUT)
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert "centimeters" in changed.text


def test_unknown_text_normalization_is_404(perso_mock: MockPersoServer) -> None:
    path = "/api/v1/settings/text_normalization_config/nope/download/"
    assert get(perso_mock, path).status_code == 404


def test_unknown_path_gets_a_standard_404(perso_mock: MockPersoServer) -> None:
    response = get(perso_mock, "/api/v1/nothing-here/")
    assert response.status_code == 404
    assert first_error(response)["code"] == "not_found"


def test_cors_preflight_for_browsers(perso_mock: MockPersoServer) -> None:
    response = requests.options(
        perso_mock.url + "/api/v1/session/",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_session_scoped_calls_need_no_key_but_a_known_id(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    assert requests.get(f"{perso_mock.url}/api/v1/session/{session_id}/", timeout=TIMEOUT).ok
    for path in ("", "ice-servers/"):
        response = requests.get(f"{perso_mock.url}/api/v1/session/plp-unknown/{path}", timeout=5)
        assert response.status_code == 404
        assert first_error(response)["code"] == "not_found"
    for path in ("exchange/", "event/create/", "stt/", "tts/", "llm/v2/"):
        response = post(perso_mock, f"/api/v1/session/plp-unknown/{path}", json={})
        assert response.status_code == 404


def test_ice_servers_default_and_configured(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    path = f"/api/v1/session/{session_id}/ice-servers/"
    assert get(perso_mock, path, headers={}).json() == {"ice_servers": []}
    stun = [{"urls": "stun:stun.example.org:3478"}]
    perso_mock.catalog.settings["ice_servers"] = stun
    assert get(perso_mock, path, headers={}).json() == {"ice_servers": stun}
    turn = [{"urls": ["turn:turn.example.org"], "username": "u", "credential": "c"}]
    perso_mock.sessions[session_id].ice_servers = turn
    assert get(perso_mock, path, headers={}).json() == {"ice_servers": turn}


def test_events_are_recorded_and_answered_with_json(perso_mock: MockPersoServer) -> None:
    session_id = create(perso_mock).json()["session_id"]
    path = f"/api/v1/session/{session_id}/event/create/"
    for event, detail in (("SESSION_START", ""), ("SESSION_LOG", '{"a": 1}')):
        response = post(perso_mock, path, json={"detail": detail, "event": event})
        assert response.status_code == 201
        assert response.json()["event"] == event
    post(perso_mock, path, json={"event": "SOMETHING_NEW", "detail": "x", "extra": 1})
    post(perso_mock, path, data=b"not json")
    session = perso_mock.sessions[session_id]
    assert session.event_names == ["SESSION_START", "SESSION_LOG", "SOMETHING_NEW", "None"]
    assert session.events[1]["detail"] == '{"a": 1}'
    assert session.events[2]["extra"] == {"extra": 1}
    assert session.events[3]["raw"] == "not json"


def test_api_key_can_be_changed_and_reset_restores_it(perso_mock: MockPersoServer) -> None:
    original = perso_mock.api_key
    perso_mock.api_key = "rotated"
    assert (
        get(perso_mock, "/api/v1/prompt/", headers={"PersoLive-APIKey": original}).status_code
        == 401
    )
    assert get(perso_mock, "/api/v1/prompt/").status_code == 200
    perso_mock.reset()
    assert perso_mock.api_key == original
    assert get(perso_mock, "/api/v1/prompt/", headers=key_headers(perso_mock)).ok
