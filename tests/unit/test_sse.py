"""SseParser: both framings, any split of the bytes, junk becomes StreamFailed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perso_sync._sse import (
    RemoteToolResult,
    SseParser,
    StreamFailed,
    TextDelta,
    ToolCalls,
    Unknown,
)

CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
EVENTS: list[dict[str, Any]] = [
    {"status": "success", "type": "message", "content": "Hel"},
    {"status": "success", "type": "message", "content": "lo 한국어 😀 é"},
    {"status": "success", "type": "tool_call", "content": "", "tool_calls": [CALL]},
    {
        "status": "success",
        "role": "tool",
        "type": "tool_call",
        "content": '{"ok": true}',
        "tool_call_id": "call_9",
    },
    {"status": "success", "type": "done", "content": ""},
]
EXPECTED = [
    TextDelta("Hel"),
    TextDelta("lo 한국어 😀 é"),
    ToolCalls("", (CALL,)),
    RemoteToolResult("call_9", '{"ok": true}'),
    Unknown("done"),
]


def platform(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)


def standard(events: list[dict[str, Any]], newline: bytes = b"\r\n") -> bytes:
    out = b": keep-alive" + newline
    for i, event in enumerate(events):
        # Multi-line data: pretty-printed JSON, one data: line per line.
        lines = json.dumps(event, ensure_ascii=False, indent=1).split("\n")
        out += b"event: message" + newline + f"id: {i}".encode() + newline
        out += b"".join(b"data: " + line.encode() + newline for line in lines) + newline
    return out


def parse(data: bytes, cuts: list[int]) -> list[object]:
    parser = SseParser()
    events: list[object] = []
    previous = 0
    for cut in sorted(set(cuts)):
        events += parser.feed(data[previous:cut])
        previous = cut
    events += parser.feed(data[previous:])
    events += parser.close()
    return events


def test_platform_framing() -> None:
    assert parse(platform(EVENTS), []) == EXPECTED


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_standard_framing_with_comments_fields_and_multiline_data(newline: bytes) -> None:
    assert parse(standard(EVENTS, newline), []) == EXPECTED


def test_last_line_without_newline() -> None:
    assert parse(platform(EVENTS)[:-1], []) == EXPECTED


def test_fail_event_carries_its_reason() -> None:
    data = platform([EVENTS[0], {"status": "fail", "reason": "quota exceeded"}, EVENTS[1]])
    assert parse(data, []) == [TextDelta("Hel"), StreamFailed("quota exceeded")]


def test_nothing_after_a_failure() -> None:
    parser = SseParser()
    assert parser.feed(b"garbage\n") == [StreamFailed("unexpected stream line: 'garbage'")]
    assert parser.feed(platform(EVENTS)) == []
    assert parser.close() == []


def test_feed_after_close_is_a_caller_error() -> None:
    parser = SseParser()
    parser.close()
    with pytest.raises(RuntimeError):
        parser.feed(b"data: {}\n")


def test_blank_lines_and_empty_data_events_are_ignored() -> None:
    data = b"\n\n" + platform(EVENTS[:1]) + b"\n\ndata:\n\n"
    assert parse(data, []) == [TextDelta("Hel")]


@pytest.mark.parametrize(
    "junk",
    [
        b"garbage\n",
        b'{"status": "success"}\n',  # no data: prefix
        b"data: {not json\n\n",
        b"data: {not json\n" + platform(EVENTS[:1]),  # platform framing, one line garbled
        b"data: [1, 2]\n",
        b'data: "text"\n',
        b"data: \xff\xfe\n\n",  # not UTF-8
        b'data: {"type": "message", "content": "no status"}\n',
        b'data: {"status": "success", "type": "message", "content": 5}\n',
        b'data: {"status": "success", "type": "tool_call", "content": ""}\n',
        b'data: {"status": "success", "type": "tool_call", "tool_calls": [{"id": 1}]}\n',
        b'data: {"status": "success", "type": "tool_call", "role": "tool", "content": "x"}\n',
        b"data: " + b"[" * 100_000 + b"\n",  # nested too deep for the decoder
        b"data: {unterminated",  # last line, no newline
    ],
)
def test_junk_becomes_stream_failed(junk: bytes) -> None:
    events = parse(junk, [])
    assert isinstance(events[-1], StreamFailed)
    assert all(not isinstance(e, StreamFailed) for e in events[:-1])


def test_an_oversized_line_fails_instead_of_buffering_forever() -> None:
    parser = SseParser(max_event_bytes=1000)
    events = parser.feed(b"data: " + b"x" * 2000)
    assert len(events) == 1
    assert isinstance(events[0], StreamFailed)


def test_unknown_event_types_are_reported_not_failed() -> None:
    data = platform([{"status": "success", "type": "future_kind", "x": 1}])
    assert parse(data, []) == [Unknown("future_kind")]


def test_unknown_event_types_are_ignored_whatever_their_content() -> None:
    data = platform(
        [
            {"status": "success", "type": "usage", "content": {"total_tokens": 12}},
            {"status": "success", "type": "future_kind", "content": [1, 2]},
            {"status": "success", "type": "message", "content": "Hi"},
        ]
    )
    assert parse(data, []) == [Unknown("usage"), Unknown("future_kind"), TextDelta("Hi")]


def test_a_known_event_whose_content_is_not_text_still_fails() -> None:
    data = platform([{"status": "success", "type": "message", "content": {"x": 1}}])
    (event,) = parse(data, [])
    assert isinstance(event, StreamFailed)


json_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
event_strategy = st.one_of(
    st.builds(lambda c: {"status": "success", "type": "message", "content": c}, json_text),
    st.builds(
        lambda c, i: {
            "status": "success",
            "role": "tool",
            "type": "tool_call",
            "content": c,
            "tool_call_id": i,
        },
        json_text,
        json_text,
    ),
    st.builds(lambda t: {"status": "success", "type": t}, st.sampled_from(["done", "x"])),
)


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(event_strategy, max_size=8),
    framing=st.sampled_from(["platform", "lf", "crlf", "cr"]),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_split_of_the_same_bytes_gives_the_same_events(
    events: list[dict[str, Any]], framing: str, cuts: list[int]
) -> None:
    newline = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}.get(framing, b"\n")
    data = platform(events) if framing == "platform" else standard(events, newline)
    whole = parse(data, [])
    assert all(not isinstance(e, StreamFailed) for e in whole)
    assert len(whole) == len(events)
    assert parse(data, [c % (len(data) + 1) for c in cuts]) == whole


@settings(max_examples=25, deadline=None)
@given(text=st.text(min_size=1, max_size=8))
def test_every_split_point_inside_utf8_and_between_cr_and_lf(text: str) -> None:
    event = {"status": "success", "type": "message", "content": text}
    data = standard([event], b"\r\n")
    expected = parse(data, [])
    for cut in range(len(data) + 1):
        assert parse(data, [cut]) == expected


@settings(max_examples=200, deadline=None)
@given(junk=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=5))
def test_arbitrary_bytes_never_raise_and_split_does_not_matter(
    junk: bytes, cuts: list[int]
) -> None:
    whole = parse(junk, [])
    kinds = (TextDelta, ToolCalls, RemoteToolResult, StreamFailed, Unknown)
    assert all(type(e) in kinds for e in whole)
    assert sum(isinstance(e, StreamFailed) for e in whole) <= 1
    assert parse(junk, [c % (len(junk) + 1) for c in cuts]) == whole


@settings(max_examples=200, deadline=None)
@given(
    content=st.text(),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", " :  ")]),
    ascii_only=st.booleans(),
    trailer=st.sampled_from(["", " ", "\t", " , "]),
)
def test_one_line_deltas_decode_exactly_like_json(
    content: str, separators: tuple[str, str], ascii_only: bool, trailer: str
) -> None:
    event = {"status": "success", "type": "message", "content": content}
    text = json.dumps(event, separators=separators, ensure_ascii=ascii_only)
    line = ("data: " + text[:-1] + trailer + "}\n").encode("utf-8", "surrogatepass")
    expected: list[object]
    try:
        expected = [TextDelta(json.loads(line[6:])["content"])]
    except ValueError:
        expected = [StreamFailed("")]  # only the kind is compared below
    got = parse(line, [])
    assert [type(e) for e in got] == [type(e) for e in expected]
    if isinstance(expected[0], TextDelta):
        assert got == expected
