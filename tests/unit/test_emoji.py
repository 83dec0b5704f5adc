"""Emoji removal (docs/PROTOCOL.md §11): table of cases and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perso_sync._emoji import remove_emoji

ZWJ = "\u200d"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, world!", "Hello, world!"),
        ("Hi 👋 there", "Hi  there"),
        ("안녕하세요😀!", "안녕하세요!"),
        ("中文🙂。日本語のテキスト", "中文。日本語のテキスト"),
        ("café naïve façade", "café naïve façade"),
        ("👨‍👩‍👧‍👦 family", " family"),  # ZWJ sequence
        ("👩🏽‍💻 codes", " codes"),  # skin tone inside a ZWJ sequence
        ("👍🏿👍", ""),  # skin tone
        ("❤️‍🔥hot", "hot"),  # VS16 + ZWJ
        ("🇰🇷 🇺🇸 flags", "  flags"),  # regional-indicator pairs
        ("🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f Scotland", " Scotland"),
        ("1️⃣ 2⃣ #️⃣ *️⃣", "   "),  # keycaps, with and without VS16
        ("#1 * 2 + 3 = 5", "#1 * 2 + 3 = 5"),  # digits, '#', '*' outside keycaps
        ("©2024 Perso™ ‼", "©2024 Perso™ ‼"),  # text-default symbols stay as text
        ("©️ ™️", " "),  # ... unless asked to be emoji
        ("☀ ✈ ♥ ✔", "   "),  # pictographs without selector
        ("☺︎", ""),  # text selector on a pictograph
        ("नमस्\u200dते", "नमस्\u200dते"),  # a ZWJ between letters is kept
        ("ok\ufe0f", "ok"),  # a stray selector goes
        ("🀄🃏🆗🈁", ""),
        ("", ""),
    ],
)
def test_table(text: str, expected: str) -> None:
    assert remove_emoji(text) == expected


EMOJI_SEQUENCES = [
    "😀",
    "👋🏻",
    "👨‍👩‍👧",
    "🧑🏾‍🚀",
    "🇯🇵",
    "1️⃣",
    "#️⃣",
    "❤️",
    "🏳️‍🌈",
    "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    "©️",
    "🫠",
]
# Text that must survive: letters of many scripts, marks, digits, punctuation, spaces;
# never the emoji building blocks themselves.
_EXCLUDED = "\u200d\ufe0e\ufe0f\u20e3©®™‼⁉ℹⓂ〰〽㊗㊙"
plain_text = st.text(
    st.characters(
        whitelist_categories=("Lu", "Ll", "Lo", "Mn", "Nd", "Po", "Pd", "Ps", "Pe", "Zs"),
        blacklist_characters=_EXCLUDED,
        max_codepoint=0xFFFF,
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(text=plain_text)
def test_text_without_emoji_is_unchanged(text: str) -> None:
    assert remove_emoji(text) == text


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(plain_text, min_size=1, max_size=5),
    emoji=st.lists(st.sampled_from(EMOJI_SEQUENCES), min_size=0, max_size=5),
)
def test_emoji_inserted_anywhere_are_removed_exactly(pieces: list[str], emoji: list[str]) -> None:
    mixed = "".join(p + (emoji[i] if i < len(emoji) else "") for i, p in enumerate(pieces))
    assert remove_emoji(mixed) == "".join(pieces)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40))
def test_idempotent_and_only_removes(text: str) -> None:
    once = remove_emoji(text)
    assert remove_emoji(once) == once
    remaining = iter(text)
    assert all(ch in remaining for ch in once)  # a subsequence: nothing added or reordered
