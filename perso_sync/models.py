"""Typed data of the Perso platform: frozen attrs classes, (de)serialized by ``_converter``.

Every model keeps the fields the server adds later in ``extra`` (and sends them back out), so a
newer server never breaks an older client.
"""

from __future__ import annotations

import datetime as _dt
import enum
from typing import Final, Literal

import attrs

# ---------------------------------------------------------------------------------------------
# Sentinel: "not given" is not the same as "given as None" (the two locale fields of
# SessionParams: null disables normalization, an absent key leaves the server default).


class _NotGivenType(enum.Enum):
    NOT_GIVEN = "NOT_GIVEN"

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGivenType.NOT_GIVEN
NotGiven = Literal[_NotGivenType.NOT_GIVEN]


# ---------------------------------------------------------------------------------------------
# Chat states and the chat log


class ChatState(str, enum.Enum):
    """What the session is busy with; subscribers get the set of active states (empty = idle)."""

    RECORDING = "RECORDING"
    LLM = "LLM"
    ANALYZING = "ANALYZING"
    SPEAKING = "SPEAKING"
    TTS = "TTS"

    def __str__(self) -> str:
        return self.value


@attrs.frozen(kw_only=True)
class Chat:
    """One entry of a session's chat log."""

    is_user: bool
    text: str
    timestamp: _dt.datetime
