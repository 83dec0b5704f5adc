"""The plain chat view of ``perso chat``: a state change while the reply streams (process_llm
turns the LLM state off as the stream ends) never lands inside the reply's line."""

from __future__ import annotations

import io

from perso_sync.cli import _PlainChatView
from perso_sync.models import ChatState


def test_a_state_line_during_the_reply_closes_the_reply_line_first() -> None:
    out = io.StringIO()
    view = _PlainChatView(out)
    view.on_states(frozenset({ChatState.LLM}))
    view.reply("Ok")
    view.reply(".")
    view.on_states(frozenset())  # the LLM state ends with the stream, before end_reply
    view.end_reply()
    view.reply("More")
    view.end_reply()
    assert out.getvalue().splitlines() == [
        "  [avatar: LLM]",
        "avatar> Ok.",
        "  [avatar: idle]",
        "avatar> More",
    ]


def test_a_state_line_during_the_reply_waits_for_the_end_of_its_line() -> None:
    out = io.StringIO()
    view = _PlainChatView(out)
    view.reply("Once upon")
    view.on_states(frozenset({ChatState.SPEAKING}))  # arrives while the reply still streams
    view.reply(" a time.")
    view.end_reply()
    view.on_states(frozenset())
    assert out.getvalue().splitlines() == [
        "avatar> Once upon a time.",
        "  [avatar: speaking]",
        "  [avatar: idle]",
    ]
