"""PersoClient and the module functions against a faked HTTP layer (``responses``).

Every endpoint: method, path, query, key header present (account) or absent (session), exact JSON
body. Form A/Form B session creation, the error re-mapping, get_all_settings, secrets.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import responses

import perso_sync as perso
from perso_sync import models
from perso_sync.client import PersoClient
from perso_sync.errors import (
    ApiError,
    DoesNotExistError,
    InvalidInputError,
    InvalidResponseError,
    MissingApiKeyError,
    NotInOrganizationError,
    PersoError,
    SessionCreationError,
    UnsupportedTemplateError,
)

SERVER = "https://perso.test"
KEY = "sk-live-client-secret-9876"
TS = "2024-05-02T09:05:55.395Z"


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[PersoClient]:
    monkeypatch.delenv("PERSO_INTERACTIVE_API_KEY", raising=False)
    monkeypatch.delenv("PERSO_API_SERVER", raising=False)
    with PersoClient(api_key=KEY, api_server=SERVER, sleep=lambda _: None) as perso_client:
        yield perso_client


def _only_call(mocked: responses.RequestsMock) -> Any:
    assert len(mocked.calls) == 1
    return mocked.calls[0].request


def _json_body(request: Any) -> Any:
    return json.loads(request.body)


def error_body(code: str, detail: str, attr: str | None = None) -> dict[str, Any]:
    return {"type": "client_error", "errors": [{"code": code, "detail": detail, "attr": attr}]}


# -- account-scoped lists -----------------------------------------------------------------------

LISTS: list[tuple[str, str, dict[str, Any], type[Any]]] = [
    ("get_llms", "/api/v1/settings/llm_type/", {"name": "gpt-4o"}, models.LLMType),
    (
        "get_ttss",
        "/api/v1/settings/tts_type/",
        {"name": "jenny", "service": "azure", "speaker": "Jenny"},
        models.TTSType,
    ),
    (
        "get_stts",
        "/api/v1/settings/stt_type/",
        {"name": "whisper", "service": "openai", "options": None},
        models.STTType,
    ),
    (
        "get_model_styles",
        "/api/v1/settings/modelstyle/",
        {
            "name": "yura",
            "model": "m",
            "style": "s",
            "model_files": [{"name": "f"}],
            "configs": [{"modelstyleconfig_id": "c", "key": "k", "value": "v"}],
            "platform_type": "webrtc",
        },
        models.ModelStyle,
    ),
    (
        "get_prompts",
        "/api/v1/prompt/",
        {"prompt_id": "p1", "name": "n", "system_prompt": "s", "intro_message": "Hi"},
        models.Prompt,
    ),
    (
        "get_documents",
        "/api/v1/document/",
        {
            "document_id": "d",
            "title": "t",
            "processed": True,
            "created_at": TS,
            "updated_at": TS,
        },
        models.Document,
    ),
    (
        "get_background_images",
        "/api/v1/background_image/",
        {"backgroundimage_id": "b", "title": "t", "image": "https://img", "created_at": TS},
        models.BackgroundImage,
    ),
    (
        "get_mcp_servers",
        "/api/v1/settings/mcp_type/",
        {"mcpserver_id": "m", "name": "n", "url": "https://mcp"},
        models.MCPServer,
    ),
    (
        "get_text_normalizations",
        "/api/v1/settings/text_normalization_config/",
        {"textnormalizationconfig_id": "t", "name": "n", "created_at": TS},
        models.TextNormalizationConfig,
    ),
]


@pytest.mark.parametrize(("method", "path", "item", "model"), LISTS, ids=[row[0] for row in LISTS])
def test_settings_list(
    client: PersoClient,
    mocked: responses.RequestsMock,
    method: str,
    path: str,
    item: dict[str, Any],
    model: type[Any],
) -> None:
    mocked.get(SERVER + path, json=[{**item, "added_later": 1}])
    result = getattr(client, method)()
    request = _only_call(mocked)
    assert request.method == "GET"
    assert request.path_url.split("?")[0] == path
    expected_query = {"platform_type": ["webrtc"]} if "modelstyle" in path else {}
    assert request.params == {k: v[0] for k, v in expected_query.items()}
    assert request.headers["PersoLive-APIKey"] == KEY
    assert request.body is None
    assert len(result) == 1
    assert isinstance(result[0], model)
    assert result[0].extra == {"added_later": 1}


def test_model_styles_query_string(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.get(SERVER + "/api/v1/settings/modelstyle/", json=[])
    client.get_model_styles()
    assert _only_call(mocked).url == SERVER + "/api/v1/settings/modelstyle/?platform_type=webrtc"


def test_get_text_normalization(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.get(
        SERVER + "/api/v1/settings/text_normalization_config/tn%2F1/download/",
        json={"config_id": "tn/1", "config_name": "n", "file_url": "https://blob/x.csv?sig=1"},
    )
    download = client.get_text_normalization("tn/1")
    request = _only_call(mocked)
    assert request.headers["PersoLive-APIKey"] == KEY
    assert download == models.TextNormalizationDownload(
        config_id="tn/1", config_name="n", file_url="https://blob/x.csv?sig=1"
    )


def test_session_templates_list_and_one(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(SERVER + "/api/v1/session_template/", json=[template()])
    mocked.get(SERVER + "/api/v1/session_template/tpl-1/", json=template())
    listed = client.get_session_templates()
    one = client.get_session_template("tpl-1")
    assert listed == [one]
    assert one.model_style.platform_type == "webrtc"
    assert one.capability[0].name is models.CapabilityName.STF_WEBRTC
    assert all(call.request.headers["PersoLive-APIKey"] == KEY for call in mocked.calls)


def test_wrong_shape_is_an_invalid_response(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(SERVER + "/api/v1/prompt/", json={"results": []})
    with pytest.raises(InvalidResponseError, match=r"GET /api/v1/prompt/"):
        client.get_prompts()


# -- get_all_settings ---------------------------------------------------------------------------


def _mock_all_lists(mocked: responses.RequestsMock, **overrides: Any) -> None:
    for method, path, item, _ in LISTS:
        kwargs = overrides.get(method, {"json": [item]})
        mocked.get(SERVER + path, **kwargs)


def test_get_all_settings(client: PersoClient, mocked: responses.RequestsMock) -> None:
    _mock_all_lists(mocked)
    settings = client.get_all_settings()
    assert [llm.name for llm in settings.llms] == ["gpt-4o"]
    assert settings.tts_types[0].speaker == "Jenny"
    assert len(settings.text_normalizations) == 1
    assert len(mocked.calls) == 9
    assert {call.request.path_url.split("?")[0] for call in mocked.calls} == {
        path for _, path, _, _ in LISTS
    }


def test_get_all_settings_runs_the_nine_lists_concurrently(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    # Each fake answer waits until all nine requests are in flight; run one after another, the
    # first would wait in vain and break the barrier.
    barrier = threading.Barrier(len(LISTS))

    def answer_when_all_arrived(
        item: dict[str, Any],
    ) -> Callable[[Any], tuple[int, dict[str, str], str]]:
        def callback(request: Any) -> tuple[int, dict[str, str], str]:
            barrier.wait(timeout=10)
            return 200, {}, json.dumps([item])

        return callback

    for _, path, item, _ in LISTS:
        mocked.add_callback(responses.GET, SERVER + path, callback=answer_when_all_arrived(item))
    settings = client.get_all_settings()
    assert len(settings.model_styles) == 1
    assert not barrier.broken


def test_get_all_settings_tolerates_text_normalization_failure(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    _mock_all_lists(
        mocked,
        get_text_normalizations={"status": 403, "json": error_body("invalid", "not enabled")},
    )
    settings = client.get_all_settings()
    assert settings.text_normalizations == []
    assert settings.prompts[0].prompt_id == "p1"


def test_get_all_settings_propagates_other_failures(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    _mock_all_lists(mocked, get_prompts={"status": 400, "json": error_body("invalid", "bad")})
    with pytest.raises(ApiError) as info:
        client.get_all_settings()
    assert info.value.detail == "bad"


def test_get_all_settings_without_key_sends_nothing(
    mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PERSO_INTERACTIVE_API_KEY", raising=False)
    with (
        PersoClient(api_server=SERVER) as keyless,
        pytest.raises(MissingApiKeyError, match="PERSO_INTERACTIVE_API_KEY"),
    ):
        keyless.get_all_settings()
    assert len(mocked.calls) == 0


# -- get_intro_message --------------------------------------------------------------------------


def test_get_intro_message(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.get(
        SERVER + "/api/v1/prompt/",
        json=[
            {"prompt_id": "p0", "name": "a", "system_prompt": "s"},
            {"prompt_id": "p1", "name": "b", "system_prompt": "s", "intro_message": "Hello!"},
        ],
    )
    assert client.get_intro_message("p1") == "Hello!"
    assert client.get_intro_message("p0") == ""


def test_get_intro_message_not_found(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.get(SERVER + "/api/v1/prompt/", json=[])
    with pytest.raises(ApiError) as info:
        client.get_intro_message("nope")
    assert (info.value.error_code, info.value.code, info.value.attr) == (
        404,
        "not_found",
        "prompt_id",
    )
    assert "nope" in info.value.detail


def test_get_intro_message_reraises_api_error(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(SERVER + "/api/v1/prompt/", status=401, json=error_body("auth", "bad key"))
    with pytest.raises(ApiError) as info:
        client.get_intro_message("p1")
    assert (info.value.error_code, info.value.detail) == (401, "bad key")


# -- create_session_id, Form A ------------------------------------------------------------------


def _mock_create(mocked: responses.RequestsMock, **kwargs: Any) -> None:
    mocked.post(SERVER + "/api/v1/session/", **(kwargs or {"json": {"session_id": "sid-1"}}))


def test_form_a_minimal_body(client: PersoClient, mocked: responses.RequestsMock) -> None:
    _mock_create(mocked)
    params = models.SessionParams(using_stf_webrtc=True, model_style="yura", prompt="p1")
    assert client.create_session_id(params=params) == "sid-1"
    request = _only_call(mocked)
    assert request.method == "POST"
    assert request.headers["PersoLive-APIKey"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert _json_body(request) == {
        "using_stf_webrtc": True,
        "model_style": "yura",
        "prompt": "p1",
        "capability": ["STF_WEBRTC"],
    }


def test_form_a_full_body_and_capability_order(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    _mock_create(mocked)
    client.create_session_id(
        params=models.SessionParams(
            using_stf_webrtc=True,
            model_style="yura",
            prompt="p1",
            document="d1",
            background_image="b1",
            mcp_servers=["m1", "m2"],
            padding_left=-0.5,
            padding_top=0.0,
            padding_height=1.2,
            stt_type="whisper",
            tts_type="jenny",
            llm_type="gpt",
            text_normalization_config="tn1",
            text_normalization_locale="ko",
            stt_text_normalization_config="tn2",
            stt_text_normalization_locale=None,
        )
    )
    assert _json_body(_only_call(mocked)) == {
        "using_stf_webrtc": True,
        "model_style": "yura",
        "prompt": "p1",
        "document": "d1",
        "background_image": "b1",
        "mcp_servers": ["m1", "m2"],
        "padding_left": -0.5,
        "padding_top": 0.0,
        "padding_height": 1.2,
        "llm_type": "gpt",
        "tts_type": "jenny",
        "stt_type": "whisper",
        "text_normalization_config": "tn1",
        "text_normalization_locale": "ko",
        "stt_text_normalization_config": "tn2",
        "stt_text_normalization_locale": None,
        "capability": ["STF_WEBRTC", "LLM", "TTS", "STT"],
    }


def test_form_a_from_a_dict(client: PersoClient, mocked: responses.RequestsMock) -> None:
    _mock_create(mocked)
    client.create_session_id(
        params={
            "using_stf_webrtc": False,
            "model_style": "yura",
            "prompt": "p1",
            "tts_type": "jenny",
            "text_normalization_locale": None,
        }
    )
    assert _json_body(_only_call(mocked)) == {
        "using_stf_webrtc": False,
        "model_style": "yura",
        "prompt": "p1",
        "tts_type": "jenny",
        "text_normalization_locale": None,
        "capability": ["TTS"],
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {
            "params": {"using_stf_webrtc": True, "model_style": "m", "prompt": "p"},
            "session_template_id": "t",
        },
        {"params": {"using_stf_webrtc": True, "model_style": "m"}},
        {"params": {"using_stf_webrtc": True, "model_style": "m", "prompt": "p", "padding_top": 2}},
    ],
)
def test_form_a_bad_input_sends_nothing(
    client: PersoClient, mocked: responses.RequestsMock, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError):
        client.create_session_id(**kwargs)
    assert len(mocked.calls) == 0


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("does_not_exist", DoesNotExistError),
        ("not_in_organization", NotInOrganizationError),
        ("invalid", SessionCreationError),
    ],
)
def test_form_a_error_remapping(
    client: PersoClient, mocked: responses.RequestsMock, code: str, expected: type[Exception]
) -> None:
    _mock_create(mocked, status=400, json=error_body(code, "LLM gpt-x not found", "llm_type"))
    params = models.SessionParams(using_stf_webrtc=True, model_style="m", prompt="p")
    with pytest.raises(expected) as info:
        client.create_session_id(params=params)
    error = info.value
    assert type(error) is expected
    assert isinstance(error, ApiError)
    assert (error.error_code, error.code, error.detail, error.attr) == (
        400,
        code,
        "LLM gpt-x not found",
        "llm_type",
    )


def test_form_a_html_502_is_a_session_creation_error(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    _mock_create(mocked, status=502, body=b"<html>bad gateway</html>")
    params = models.SessionParams(using_stf_webrtc=True, model_style="m", prompt="p")
    with pytest.raises(SessionCreationError) as info:
        client.create_session_id(params=params)
    assert info.value.code == "UNKNOWN_ERROR"
    assert len(mocked.calls) == 1  # never retried


def test_form_a_answer_without_session_id(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    _mock_create(mocked, json={"id": "x"})
    params = models.SessionParams(using_stf_webrtc=True, model_style="m", prompt="p")
    with pytest.raises(InvalidResponseError, match="session_id"):
        client.create_session_id(params=params)


# -- create_session_id, Form B ------------------------------------------------------------------


def template(**overrides: Any) -> dict[str, Any]:
    """A complete SessionTemplate as the platform documents it."""
    base: dict[str, Any] = {
        "sessiontemplate_id": "tpl-1",
        "name": "Front desk",
        "description": None,
        "prompt": {"prompt_id": "p1", "name": "Desk", "system_prompt": "Be kind."},
        "capability": [
            {"name": "STF_WEBRTC", "description": None},
            {"name": "LLM"},
            {"name": "TTS"},
            {"name": "STT"},
        ],
        "document": {
            "document_id": "d1",
            "title": "FAQ",
            "file": "https://f",
            "processed": True,
            "processed_v2": True,
            "created_at": TS,
            "updated_at": TS,
        },
        "llm_type": {"name": "gpt-4o", "service": "openai"},
        "tts_type": {"name": "jenny", "service": "azure", "voice": None},
        "stt_type": {"name": "whisper", "service": "openai", "options": None},
        "text_normalization_config": {
            "textnormalizationconfig_id": "tn1",
            "name": "numbers",
            "created_at": TS,
        },
        "text_normalization_locale": "en",
        "stt_text_normalization_config": {
            "textnormalizationconfig_id": "tn2",
            "name": "brands",
            "created_at": TS,
        },
        "stt_text_normalization_locale": "ko",
        "model_style": {
            "name": "yura",
            "model": "m",
            "model_file": None,
            "model_files": [{"name": "f", "file": None}],
            "style": "s",
            "file": None,
            "platform_type": "webrtc",
            "configs": [],
        },
        "background_image": {
            "backgroundimage_id": "bg1",
            "title": "Lobby",
            "image": "https://img",
            "created_at": TS,
        },
        "agent": None,
        "padding_left": 0.1,
        "padding_top": 0.2,
        "padding_height": 1.3,
        "extra_data": None,
        "mcp_servers": [
            {"mcpserver_id": "mcp1", "name": "docs", "url": "https://mcp1"},
            {"mcpserver_id": "mcp2", "name": "cal", "url": "https://mcp2"},
        ],
        "created_at": TS,
        "last_used_at": None,
    }
    base.update(overrides)
    return base


FULL_BODY: dict[str, Any] = {
    "using_stf_webrtc": True,
    "model_style": "yura",
    "prompt": "p1",
    "document": "d1",
    "background_image": "bg1",
    "mcp_servers": ["mcp1", "mcp2"],
    "padding_left": 0.1,
    "padding_top": 0.2,
    "padding_height": 1.3,
    "llm_type": "gpt-4o",
    "tts_type": "jenny",
    "stt_type": "whisper",
    "text_normalization_config": "tn1",
    "text_normalization_locale": "en",
    "stt_text_normalization_config": "tn2",
    "stt_text_normalization_locale": "ko",
    "capability": ["STF_WEBRTC", "LLM", "TTS", "STT"],
}


def _without(*keys: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(body: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in body.items() if key not in keys}

    return change


def _with(**values: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, **values}

    return change


def _drop_key(name: str) -> dict[str, Any]:
    data = template()
    del data[name]
    return data


FORM_B_ROWS: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], dict[str, Any]]]] = [
    ("full template", template(), lambda body: body),
    (
        "no STF_WEBRTC capability",
        template(capability=[{"name": "LLM"}, {"name": "TTS"}, {"name": "STT"}]),
        lambda body: {
            **body,
            "using_stf_webrtc": False,
            "capability": ["LLM", "TTS", "STT"],
        },
    ),
    ("document null", template(document=None), _without("document")),
    ("background image null", template(background_image=None), _without("background_image")),
    ("mcp servers empty", template(mcp_servers=[]), _without("mcp_servers")),
    ("mcp servers absent", _drop_key("mcp_servers"), _without("mcp_servers")),
    (
        "types without their capabilities",
        template(capability=[{"name": "STF_WEBRTC"}]),
        lambda body: {
            **_without("llm_type", "tts_type", "stt_type")(body),
            "capability": ["STF_WEBRTC"],
        },
    ),
    (
        "only the TTS capability",
        template(capability=[{"name": "STF_WEBRTC"}, {"name": "TTS"}, {"name": "NEW_CAP"}]),
        lambda body: {
            **_without("llm_type", "stt_type")(body),
            "capability": ["STF_WEBRTC", "TTS"],
        },
    ),
    (
        "normalization configs null",
        template(text_normalization_config=None, stt_text_normalization_config=None),
        _without("text_normalization_config", "stt_text_normalization_config"),
    ),
    (
        "locales null stay null",
        template(text_normalization_locale=None, stt_text_normalization_locale=None),
        _with(text_normalization_locale=None, stt_text_normalization_locale=None),
    ),
    (
        "locales absent stay absent",
        {
            key: value
            for key, value in template().items()
            if key not in ("text_normalization_locale", "stt_text_normalization_locale")
        },
        _without("text_normalization_locale", "stt_text_normalization_locale"),
    ),
    (
        "paddings null are left out",
        template(padding_left=None, padding_top=None, padding_height=None),
        _without("padding_left", "padding_top", "padding_height"),
    ),
    (
        "paddings zero are copied",
        template(padding_left=0, padding_top=0, padding_height=0),
        _with(padding_left=0, padding_top=0, padding_height=0),
    ),
]


@pytest.mark.parametrize(
    ("tpl", "expected"),
    [(row[1], row[2](copy.deepcopy(FULL_BODY))) for row in FORM_B_ROWS],
    ids=[row[0] for row in FORM_B_ROWS],
)
def test_form_b_mapping(
    client: PersoClient,
    mocked: responses.RequestsMock,
    tpl: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    mocked.get(SERVER + "/api/v1/session_template/tpl-1/", json=tpl)
    _mock_create(mocked)
    assert client.create_session_id(session_template_id="tpl-1") == "sid-1"
    get, post = (call.request for call in mocked.calls)
    assert get.method == "GET"
    assert get.headers["PersoLive-APIKey"] == KEY
    assert post.method == "POST"
    assert post.headers["PersoLive-APIKey"] == KEY
    assert _json_body(post) == expected


@pytest.mark.parametrize(
    ("left", "top", "height", "sent"),
    [
        (0.0, 0.1, 1.0, '"padding_left":0,"padding_top":0.1,"padding_height":1,'),
        (0, 0, 2, '"padding_left":0,"padding_top":0,"padding_height":2,'),
        (-0.5, 0.25, 1.5, '"padding_left":-0.5,"padding_top":0.25,"padding_height":1.5,'),
    ],
)
def test_form_b_sends_template_numbers_as_the_js_client(
    client: PersoClient,
    mocked: responses.RequestsMock,
    left: float,
    top: float,
    height: float,
    sent: str,
) -> None:
    # The official client re-serialises the template with JSON.stringify: 0.0 goes out as 0.
    tpl = template(padding_left=left, padding_top=top, padding_height=height)
    mocked.get(SERVER + "/api/v1/session_template/tpl-1/", json=tpl)
    _mock_create(mocked)
    client.create_session_id(session_template_id="tpl-1")
    raw = mocked.calls[1].request.body
    assert sent in (raw.decode() if isinstance(raw, bytes) else raw)


@pytest.mark.parametrize("platform", ["onpremise", None, "WEBRTC"])
def test_form_b_non_webrtc_template_sends_no_post(
    client: PersoClient, mocked: responses.RequestsMock, platform: str | None
) -> None:
    style = {**template()["model_style"], "platform_type": platform}
    mocked.get(SERVER + "/api/v1/session_template/tpl-1/", json=template(model_style=style))
    _mock_create(mocked)
    with pytest.raises(UnsupportedTemplateError) as info:
        client.create_session_id(session_template_id="tpl-1")
    assert "tpl-1" in str(info.value)
    assert repr(platform) in str(info.value)
    assert [call.request.method for call in mocked.calls] == ["GET"]


def test_form_b_missing_template_is_does_not_exist(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(
        SERVER + "/api/v1/session_template/nope/",
        status=404,
        json=error_body("does_not_exist", "No such template.", "sessiontemplate_id"),
    )
    with pytest.raises(DoesNotExistError) as info:
        client.create_session_id(session_template_id="nope")
    assert info.value.attr == "sessiontemplate_id"
    assert len(mocked.calls) == 1


def test_form_b_template_with_bad_values_names_the_template(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(SERVER + "/api/v1/session_template/tpl-1/", json=template(padding_top=7.0))
    with pytest.raises(InvalidInputError, match=r"tpl-1.*padding_top"):
        client.create_session_id(session_template_id="tpl-1")
    assert [call.request.method for call in mocked.calls] == ["GET"]


def test_form_b_post_error_is_remapped(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.get(SERVER + "/api/v1/session_template/tpl-1/", json=template())
    _mock_create(mocked, status=403, json=error_body("not_in_organization", "no", "llm_type"))
    with pytest.raises(NotInOrganizationError):
        client.create_session_id(session_template_id="tpl-1")


# -- session-scoped calls -----------------------------------------------------------------------

SID = "sess-42"
SESSION_BASE = f"{SERVER}/api/v1/session/{SID}/"


def test_get_session_info(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.get(
        SESSION_BASE,
        json={
            "session_id": SID,
            "status": "IN_PROGRESS",
            "termination_reason": None,
            "capability": [{"name": "STF_WEBRTC"}, {"name": "FUTURE"}],
            "created_at": TS,
            "duration_sec": 12,
            "document": "d1",
            "extra_data": "{}",
            "tts_type": {"name": "jenny", "service": "azure", "voice_extra_data": "x"},
        },
    )
    info = client.get_session_info(SID)
    request = _only_call(mocked)
    assert request.method == "GET"
    assert "PersoLive-APIKey" not in request.headers
    assert info.status is models.SessionStatus.IN_PROGRESS
    assert info.capability[1].name == "FUTURE"
    assert info.uses_webrtc


def test_get_ice_servers(client: PersoClient, mocked: responses.RequestsMock) -> None:
    servers = [{"urls": ["turn:t.example:3478"], "username": "u", "credential": "c"}]
    mocked.get(SESSION_BASE + "ice-servers/", json={"ice_servers": servers})
    assert client.get_ice_servers(SID) == servers
    assert "PersoLive-APIKey" not in _only_call(mocked).headers


def test_get_ice_servers_bad_shape(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.get(SESSION_BASE + "ice-servers/", json={"ice_servers": "nope"})
    with pytest.raises(InvalidResponseError, match="ice_servers"):
        client.get_ice_servers(SID)


def test_exchange_sdp(client: PersoClient, mocked: responses.RequestsMock) -> None:
    answer = {"type": "answer", "sdp": "v=0 answer"}
    mocked.post(SESSION_BASE + "exchange/", json={"server_sdp": answer})
    offer = {"type": "offer", "sdp": "v=0 offer"}
    assert client.exchange_sdp(SID, offer) == answer
    request = _only_call(mocked)
    assert "PersoLive-APIKey" not in request.headers
    assert _json_body(request) == {"client_sdp": offer}


def test_exchange_sdp_bad_answer(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.post(SESSION_BASE + "exchange/", json={"server_sdp": None})
    with pytest.raises(InvalidResponseError):
        client.exchange_sdp(SID, {"type": "offer", "sdp": "x"})


@pytest.mark.parametrize("answer", [b"", b"OK", b"{}"])
def test_create_session_event(
    client: PersoClient, mocked: responses.RequestsMock, answer: bytes
) -> None:
    mocked.post(SESSION_BASE + "event/create/", body=answer)
    client.create_session_event(SID, models.SessionEvent.SESSION_START)
    request = _only_call(mocked)
    assert "PersoLive-APIKey" not in request.headers
    assert _json_body(request) == {"detail": "", "event": "SESSION_START"}


def test_create_session_event_error(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.post(SESSION_BASE + "event/create/", status=404, json=error_body("not_found", "gone"))
    with pytest.raises(ApiError) as info:
        client.create_session_event(SID, "SESSION_END", "bye")
    assert info.value.error_code == 404


@pytest.mark.parametrize(
    ("detail", "sent"),
    [
        (None, ""),
        ("plain text", "plain text"),
        ({"a": 1, "b": "é"}, '{"a":1,"b":"é"}'),
    ],
)
def test_log_session_event(
    client: PersoClient, mocked: responses.RequestsMock, detail: Any, sent: str
) -> None:
    mocked.post(SESSION_BASE + "event/create/", json={})
    client.log_session_event(SID, detail)
    assert _json_body(_only_call(mocked)) == {"detail": sent, "event": "SESSION_LOG"}


def test_make_tts(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.post(SESSION_BASE + "tts/", json={"audio": "UklGRg=="})
    audio = client.make_tts(SID, "Hello")
    assert audio == models.TTSAudio(audio="UklGRg==")
    request = _only_call(mocked)
    assert "PersoLive-APIKey" not in request.headers
    assert _json_body(request) == {"text": "Hello"}


def test_make_tts_with_options(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.post(SESSION_BASE + "tts/", json={"audio": "AA=="})
    client.make_tts(SID, "Hi", locale="en", output_format="mp3")
    assert _json_body(_only_call(mocked)) == {"text": "Hi", "locale": "en", "output_format": "mp3"}


def test_make_tts_error_is_plain_api_error(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    mocked.post(SESSION_BASE + "tts/", status=400, json=error_body("invalid", "empty text"))
    with pytest.raises(ApiError) as info:
        client.make_tts(SID, "")
    assert type(info.value) is ApiError


def test_transcribe(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.post(
        SESSION_BASE + "stt/",
        json={"text": "hello", "locale": "en-US", "normalized_text": "Hello."},
    )
    result = client.transcribe(SID, b"RIFF....WAVEfmt ", language="en")
    assert result == models.STTResponse(text="hello", locale="en-US", normalized_text="Hello.")
    request = _only_call(mocked)
    assert "PersoLive-APIKey" not in request.headers
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    body = request.body
    assert b'name="audio"; filename="audio.wav"' in body
    assert b"RIFF....WAVEfmt " in body
    assert b'name="language"' in body


def test_transcribe_without_language(client: PersoClient, mocked: responses.RequestsMock) -> None:
    mocked.post(SESSION_BASE + "stt/", json={"text": ""})
    assert client.transcribe(SID, b"RIFF").text == ""
    assert b'name="language"' not in _only_call(mocked).body


@pytest.mark.parametrize("session_id", ["", "   ", None, 5])
def test_bad_session_id_sends_nothing(
    client: PersoClient, mocked: responses.RequestsMock, session_id: Any
) -> None:
    with pytest.raises(InvalidInputError, match="session_id"):
        client.get_session_info(session_id)
    assert len(mocked.calls) == 0


def test_session_id_is_one_path_segment(
    client: PersoClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(f"{SERVER}/api/v1/session/a%2F..%3Fx/", json={"session_id": "a/..?x"})
    assert client.get_session_info("a/..?x").session_id == "a/..?x"


def test_create_session_delegates_to_session_open(
    client: PersoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    class FakeSession:
        def stop_session(self) -> None:  # the client closes its sessions when it closes
            pass

        @classmethod
        def _open(cls, owner: PersoClient, session_id: str, **kwargs: Any) -> FakeSession:
            seen.update(owner=owner, session_id=session_id, **kwargs)
            return opened

    opened = FakeSession()

    fake_module = types.ModuleType("perso_sync.session")
    fake_module.Session = FakeSession  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "perso_sync.session", fake_module)
    tools = [perso.ChatTool("noop", "Does nothing.", {"type": "object"}, lambda: None)]
    assert client.create_session(SID, 640, 480, tools, connect_timeout=2.0) is opened
    assert seen == {
        "owner": client,
        "session_id": SID,
        "width": 640,
        "height": 480,
        "client_tools": tools,
        "connect_timeout": 2.0,
        "ping_timeout": 30.0,
        "heartbeat_interval": 10.0,
        "receive_video": True,
        "voice_chat": False,
        "llm_timeout": 60.0,
        "llm_turn_timeout": 300.0,
    }


def _keyword_options(function: Callable[..., Any]) -> dict[str, Any]:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and parameter.default is not inspect.Parameter.empty
    }


def test_create_session_options_match_what_a_session_accepts() -> None:
    # Every option Session._open takes must be reachable, with the same default, through both
    # public entry points; a new option added to one only would silently be out of users' reach.
    from perso_sync.session import Session

    session_options = _keyword_options(Session._open)
    session_options.pop("client_tools")
    method_options = _keyword_options(PersoClient.create_session)
    function_options = _keyword_options(perso.create_session)
    function_options.pop("client_tools")
    function_options.pop("api_server")
    assert method_options == session_options
    assert function_options == session_options


# -- configuration, environment, secrets --------------------------------------------------------


def test_env_fallbacks(mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSO_INTERACTIVE_API_KEY", "env-key-555")
    monkeypatch.setenv("PERSO_API_SERVER", "https://env.test/ ")
    with PersoClient() as env_client:
        assert env_client.api_server == "https://env.test"
        mocked.get("https://env.test/api/v1/settings/llm_type/", json=[])
        env_client.get_llms()
    assert _only_call(mocked).headers["PersoLive-APIKey"] == "env-key-555"


def test_default_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERSO_API_SERVER", raising=False)
    with PersoClient(api_key="k") as default_client:
        assert default_client.api_server == "https://platform.perso.ai"
        assert default_client.timeout.as_requests() == (5.0, 30.0)
        assert default_client.max_retries == 2


def test_missing_key_fails_at_first_account_call_only(
    mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PERSO_INTERACTIVE_API_KEY", raising=False)
    keyless = PersoClient(api_server=SERVER)  # constructing is fine
    mocked.get(SESSION_BASE, json={"session_id": SID})
    assert keyless.get_session_info(SID).session_id == SID  # session calls need no key
    with pytest.raises(MissingApiKeyError, match=r"\$PERSO_INTERACTIVE_API_KEY"):
        keyless.get_llms()
    with pytest.raises(MissingApiKeyError):
        keyless.create_session_id(session_template_id="tpl-1")
    assert len(mocked.calls) == 1


def test_repr_masks_the_key(client: PersoClient) -> None:
    text = repr(client)
    assert KEY not in text
    assert "***" in text
    assert SERVER in text


def test_key_never_in_errors_or_logs(
    client: PersoClient, mocked: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    mocked.get(
        SERVER + "/api/v1/settings/llm_type/", status=401, json=error_body("auth", "bad key")
    )
    mocked.post(SERVER + "/api/v1/session/", status=503, body=b"")
    params = models.SessionParams(using_stf_webrtc=True, model_style="m", prompt="p")
    errors: list[PersoError] = []
    with caplog.at_level(logging.DEBUG):
        for call in (client.get_llms, lambda: client.create_session_id(params=params)):
            with pytest.raises(PersoError) as info:
                call()
            errors.append(info.value)
    for error in errors:
        assert KEY not in str(error)
        assert KEY not in repr(error)
        assert KEY not in repr(error.args)
    assert caplog.records
    for record in caplog.records:
        assert KEY not in record.getMessage()


def test_closed_client(client: PersoClient, mocked: responses.RequestsMock) -> None:
    client.close()
    with pytest.raises(PersoError, match="closed"):
        client.get_llms()
    assert len(mocked.calls) == 0


# -- module-level functions ---------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "item", "model"), LISTS, ids=[row[0] for row in LISTS])
def test_module_level_lists(
    mocked: responses.RequestsMock, method: str, path: str, item: dict[str, Any], model: type[Any]
) -> None:
    mocked.get(SERVER + path, json=[item])
    result = getattr(perso, method)(api_key=KEY, api_server=SERVER)
    assert isinstance(result[0], model)
    assert _only_call(mocked).headers["PersoLive-APIKey"] == KEY


def test_module_level_functions(mocked: responses.RequestsMock) -> None:
    common = {"api_key": KEY, "api_server": SERVER}
    mocked.get(SERVER + "/api/v1/session_template/", json=[template()])
    mocked.get(SERVER + "/api/v1/session_template/tpl-1/", json=template())
    mocked.get(
        SERVER + "/api/v1/prompt/",
        json=[{"prompt_id": "p1", "name": "n", "system_prompt": "s", "intro_message": "Hi"}],
    )
    mocked.get(
        SERVER + "/api/v1/settings/text_normalization_config/tn1/download/",
        json={"config_id": "tn1", "config_name": "n", "file_url": "https://blob"},
    )
    mocked.post(SERVER + "/api/v1/session/", json={"session_id": "sid-9"})
    mocked.get(SESSION_BASE, json={"session_id": SID})
    mocked.post(SESSION_BASE + "tts/", json={"audio": "AA=="})

    assert perso.get_session_templates(**common)[0].sessiontemplate_id == "tpl-1"
    assert perso.get_session_template(session_template_id="tpl-1", **common).name == "Front desk"
    assert perso.get_intro_message(prompt_id="p1", **common) == "Hi"
    assert perso.get_text_normalization(config_id="tn1", **common).file_url == "https://blob"
    assert perso.create_session_id(session_template_id="tpl-1", **common) == "sid-9"
    assert (
        perso.create_session_id(
            params={"using_stf_webrtc": True, "model_style": "m", "prompt": "p"}, **common
        )
        == "sid-9"
    )
    assert perso.get_session_info(session_id=SID, api_server=SERVER).session_id == SID
    assert perso.make_tts(session_id=SID, text="Hi", api_server=SERVER).audio == "AA=="
    session_calls = [
        call.request for call in mocked.calls if "/session/sess-42/" in call.request.url
    ]
    assert session_calls
    assert all("PersoLive-APIKey" not in request.headers for request in session_calls)


def test_module_level_get_all_settings(mocked: responses.RequestsMock) -> None:
    _mock_all_lists(mocked)
    settings = perso.get_all_settings(api_key=KEY, api_server=SERVER)
    assert isinstance(settings, models.AllSettings)
    assert len(mocked.calls) == 9
