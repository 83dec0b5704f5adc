"""The mock's pure pieces under hypothesis: deltas, speech files, scripts (multipart parsing:
``test_http_validation.py``)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mock_server import speech
from mock_server.llm_script import DONE_EVENT, LlmScript, split_deltas
from mock_server.state import SynthesizedSpeech

FAST = settings(max_examples=40, deadline=None)


@FAST
@given(st.text(max_size=200), st.integers(min_value=1, max_value=5))
def test_deltas_rebuild_the_text_and_are_several(text: str, words: int) -> None:
    pieces = split_deltas(text, words)
    assert "".join(pieces) == text
    if len(text) >= 3:
        assert len(pieces) >= 3


@settings(max_examples=15, deadline=None)
@given(st.text(max_size=60), st.sampled_from([None, "en", "ko-KR"]))
def test_synthesized_wav_carries_its_text_and_length(text: str, locale: str | None) -> None:
    info = speech.inspect_audio(speech.synthesize_wav(text, locale))
    assert (info.text, info.locale) == (text, locale)
    assert abs(info.duration - speech.speech_duration(text)) < 1 / speech.TTS_SAMPLE_RATE


@FAST
@given(st.binary(max_size=64))
def test_random_bytes_are_never_taken_for_a_wav(data: bytes) -> None:
    assert speech._read_wav(b"XXXX" + data) is None


def test_duration_match_is_within_two_percent() -> None:
    made = [
        SynthesizedSpeech(text="a", locale=None, duration=2.0),
        SynthesizedSpeech(text="b", locale=None, duration=3.0),
    ]
    assert speech.match_by_duration(2.03, made) is made[0]
    assert speech.match_by_duration(2.05, made) is None


@FAST
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "assistant", "tool"]),
                "content": st.text(max_size=30),
            }
        ),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.sampled_from(["get_weather", "add", "search_docs"]), max_size=3),
)
def test_every_plan_ends_with_done_and_is_json(
    messages: list[dict[str, str]], tools: list[str]
) -> None:
    specs = [{"type": "function", "function": {"name": name}} for name in tools]
    events = LlmScript().plan(messages, specs)
    assert events[-1] == DONE_EVENT
    assert all(event.get("status") in ("success", "fail") for event in events)
    json.dumps(events)
