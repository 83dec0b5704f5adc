"""Emoji removal for text that goes to speech (docs/PROTOCOL.md §11). Pure, no dependency.

Removed: every emoji pictograph (Unicode ``Extended_Pictographic``), whole ZWJ sequences
(families, professions, "heart on fire"), skin-tone modifiers, flags (pairs of regional
indicators, and tag sequences such as the flag of Scotland), keycaps (``1️⃣``, ``#️⃣``), and the
emoji variation selectors left behind.

Kept: letters of every script (Hangul, CJK, accented Latin, ...), digits, punctuation, ``#`` and
``*`` unless they are part of a keycap, and a zero-width joiner that is not between emoji (Indic
and Persian text need it). A few ``Extended_Pictographic`` characters are ordinary text by
default (``©``, ``®``, ``™``, ``‼``, ``⁉``, ``ℹ``, ``Ⓜ``, ``〰``, ``〽``, ``㊗``, ``㊙``); they are
kept unless an emoji variation selector (U+FE0F) asks for the emoji form.

The ranges below are written from the Unicode emoji data (``emoji-data.txt``, Unicode 15.1).
"""

from __future__ import annotations

import re

__all__ = ["remove_emoji"]

# Extended_Pictographic, minus the text-default characters listed in _TEXT_DEFAULT.
_PICTOGRAPHIC_RANGES: tuple[tuple[int, int], ...] = (
    (0x2194, 0x2199),
    (0x21A9, 0x21AA),
    (0x231A, 0x231B),
    (0x2328, 0x2328),
    (0x2388, 0x2388),
    (0x23CF, 0x23CF),
    (0x23E9, 0x23F3),
    (0x23F8, 0x23FA),
    (0x25AA, 0x25AB),
    (0x25B6, 0x25B6),
    (0x25C0, 0x25C0),
    (0x25FB, 0x25FE),
    (0x2600, 0x2605),
    (0x2607, 0x2612),
    (0x2614, 0x2685),
    (0x2690, 0x2705),
    (0x2708, 0x2712),
    (0x2714, 0x2714),
    (0x2716, 0x2716),
    (0x271D, 0x271D),
    (0x2721, 0x2721),
    (0x2728, 0x2728),
    (0x2733, 0x2734),
    (0x2744, 0x2744),
    (0x2747, 0x2747),
    (0x274C, 0x274C),
    (0x274E, 0x274E),
    (0x2753, 0x2755),
    (0x2757, 0x2757),
    (0x2763, 0x2767),
    (0x2795, 0x2797),
    (0x27A1, 0x27A1),
    (0x27B0, 0x27B0),
    (0x27BF, 0x27BF),
    (0x2934, 0x2935),
    (0x2B05, 0x2B07),
    (0x2B1B, 0x2B1C),
    (0x2B50, 0x2B50),
    (0x2B55, 0x2B55),
    (0x1F000, 0x1F0FF),
    (0x1F10D, 0x1F10F),
    (0x1F12F, 0x1F12F),
    (0x1F16C, 0x1F171),
    (0x1F17E, 0x1F17F),
    (0x1F18E, 0x1F18E),
    (0x1F191, 0x1F19A),
    (0x1F1AD, 0x1F1E5),
    (0x1F201, 0x1F20F),
    (0x1F21A, 0x1F21A),
    (0x1F22F, 0x1F22F),
    (0x1F232, 0x1F23A),
    (0x1F23C, 0x1F23F),
    (0x1F249, 0x1F3FA),
    (0x1F400, 0x1F53D),
    (0x1F546, 0x1F64F),
    (0x1F680, 0x1F6FF),
    (0x1F774, 0x1F77F),
    (0x1F7D5, 0x1F7FF),
    (0x1F80C, 0x1F80F),
    (0x1F848, 0x1F84F),
    (0x1F85A, 0x1F85F),
    (0x1F888, 0x1F88F),
    (0x1F8AE, 0x1F8FF),
    (0x1F90C, 0x1F93A),
    (0x1F93C, 0x1F945),
    (0x1F947, 0x1FAFF),
    (0x1FC00, 0x1FFFD),
)
# Extended_Pictographic characters that are text (letters, punctuation, signs) by default.
_TEXT_DEFAULT = "\u00a9\u00ae\u203c\u2049\u2122\u2139\u24c2\u3030\u303d\u3297\u3299"

_VS_TEXT, _VS_EMOJI = "\ufe0e", "\ufe0f"
_ZWJ = "\u200d"
_KEYCAP = "\u20e3"
_MODIFIERS = "\U0001f3fb-\U0001f3ff"  # skin tones
_REGIONAL_INDICATORS = "\U0001f1e6-\U0001f1ff"
_TAGS = "\U000e0020-\U000e007f"  # subdivision flags: black flag + tag letters + cancel tag


def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    parts = []
    for low, high in ranges:
        parts.append(re.escape(chr(low)) if low == high else f"{chr(low)}-{chr(high)}")
    return "".join(parts)


_PICT = f"[{_char_class(_PICTOGRAPHIC_RANGES)}]"
_VS = f"[{_VS_TEXT}{_VS_EMOJI}]"
# One emoji "element": a pictograph (with optional presentation selector and skin tone), a
# text-default pictograph forced to emoji form, a flag, or a keycap; plus tag characters.
_ELEMENT = (
    f"(?:{_PICT}{_VS}?[{_MODIFIERS}]?{_VS}?"
    f"|[{_TEXT_DEFAULT}]{_VS_EMOJI}"
    f"|[{_REGIONAL_INDICATORS}]{{1,2}}"
    f"|[0-9#*]{_VS_EMOJI}?{_KEYCAP}"
    f"|[{_MODIFIERS}]"
    f")[{_TAGS}]*"
)
_EMOJI_RE = re.compile(
    # ZWJ sequences as a whole; then leftovers: stray selectors, keycap marks and tags.
    f"{_ZWJ}?{_ELEMENT}(?:{_ZWJ}{_ELEMENT})*{_ZWJ}?|{_VS}|{_KEYCAP}|[{_TAGS}]"
)


def remove_emoji(text: str) -> str:
    """``text`` without emoji; all other characters kept, in order."""
    if text.isascii():  # most deltas: no emoji possible (a keycap needs U+20E3)
        return text
    return _EMOJI_RE.sub("", text)
