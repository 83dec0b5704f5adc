"""The chat-state machine of a session (docs/PROTOCOL.md §9), with no I/O and no clock of its own.

Every rule about which :class:`~perso_sync.models.ChatState` values are active lives here:
ANALYZING is reference-counted (one count per pending ``ttstf``/``stf``), LLM, TTS and RECORDING
are on/off, and SPEAKING is driven by the server's ``stf`` messages plus a deadline.

The caller owns time: methods that depend on it take ``now`` (seconds from any monotonic clock,
e.g. ``time.monotonic()`` or ``loop.time()``), and :meth:`ChatStateMachine.deadline` says when
:meth:`ChatStateMachine.tick` must run next. The session schedules one sleep until that moment;
the timer is data, not a thread. Every method returns the new active set only when it changed,
else ``None``, so the caller notifies subscribers exactly on change.

Not thread-safe: one owner (the session's event-loop side) drives it.
"""

from __future__ import annotations

import math

from perso_sync.errors import InvalidInputError
from perso_sync.models import ChatState

__all__ = ["ChatStateMachine"]

#: SPEAKING stays on this long after the end of the first clip (ms), covering playout latency.
FIRST_STF_SLACK_MS = 2000.0
#: Each further clip adds its duration plus this much (ms) to what remains.
NEXT_STF_SLACK_MS = 1000.0
#: The longest clip one ``stf`` may announce (ms): a server claiming more (``1e300``) must not
#: keep SPEAKING on until ``clear_buffer``. Ten minutes is far beyond one spoken answer or an
#: uploaded clip the data channel can carry a message for.
MAX_STF_DURATION_MS = 600_000.0

_ON_OFF_STATES = frozenset({ChatState.LLM, ChatState.TTS, ChatState.RECORDING})


def _clean_duration_ms(duration_ms: float) -> float:
    # The duration comes from the server. A negative, NaN or infinite value must neither crash
    # the session's loop nor keep SPEAKING on forever, so it counts as a zero-length clip; an
    # absurdly long one is cut to MAX_STF_DURATION_MS.
    if not math.isfinite(duration_ms) or duration_ms < 0:
        return 0.0
    return min(float(duration_ms), MAX_STF_DURATION_MS)


class ChatStateMachine:
    """Which chat states are active, updated by events, with the SPEAKING deadline as data.

    **The SPEAKING timer.** An ``stf`` message from the server (the avatar starts a clip of
    ``duration_ms``) is honoured only while ANALYZING or SPEAKING is active; it turns SPEAKING on
    and lowers the ANALYZING count by one (never below zero).

    * The first ``stf`` (no timer running) arms a deadline at ``now + duration + 2000 ms``.
    * A later ``stf`` while the timer runs extends it by the rule of docs/PROTOCOL.md §9:
      *remaining total += duration + 1000 − (time since the previous stf)*.

    Our reading of "remaining total": the number ``R`` the timer was last armed with, counted
    from the previous ``stf`` (so the deadline is ``previous_stf + R``). At a new ``stf``,
    ``elapsed = now − previous_stf`` of ``R`` has already passed, so ``R − elapsed`` is what
    is left *now*; the new clip adds ``duration + 1000``. The timer is re-armed from ``now``
    with ``R' = R + duration + 1000 − elapsed``. Equivalently, the deadline moves to
    ``old_deadline + duration + 1000``: clips queue one after the other, and the 2000 ms slack of
    the first clip is not paid twice.

    Worked example (times in seconds, durations in ms)::

        t=10.0  stf(3000)  first:  R = 3000 + 2000           = 5000  deadline 15.0
        t=11.5  stf(1000)  extend: R = 5000 + 1000 + 1000 - 1500 = 5500  deadline 11.5 + 5.5 = 17.0
        t=12.0  stf(500)   extend: R = 5500 + 500 + 1000 - 500   = 6500  deadline 12.0 + 6.5 = 18.5
        t=18.5  tick       SPEAKING off (deadline reached), timer disarmed

    An ``stf`` that arrives at or after the deadline (before ``tick`` ran) first lets the expired
    timer take effect, exactly as if ``tick(now)`` had run just before it; it then counts as a
    first ``stf`` again (or is ignored, if nothing else is active).

    >>> m = ChatStateMachine()
    >>> sorted(m.analyzing_up())
    [<ChatState.ANALYZING: 'ANALYZING'>]
    >>> sorted(m.on_stf(3000, now=10.0))
    [<ChatState.SPEAKING: 'SPEAKING'>]
    >>> m.deadline()
    15.0
    >>> m.tick(14.9) is None, m.tick(15.0)
    (True, frozenset())
    """

    __slots__ = ("_analyzing", "_deadline", "_flags", "_last_stf", "_remaining_ms", "_speaking")

    def __init__(self) -> None:
        self._analyzing = 0
        self._flags: set[ChatState] = set()
        self._speaking = False
        # Timer state: the last stf time (s), the remaining total armed then (ms), and the
        # resulting deadline (s). All None while no timer runs.
        self._last_stf: float | None = None
        self._remaining_ms: float | None = None
        self._deadline: float | None = None

    # ------------------------------------------------------------------ queries

    @property
    def active(self) -> frozenset[ChatState]:
        """The active states now; the empty set means idle."""
        states = set(self._flags)
        if self._analyzing > 0:
            states.add(ChatState.ANALYZING)
        if self._speaking:
            states.add(ChatState.SPEAKING)
        return frozenset(states)

    @property
    def analyzing_count(self) -> int:
        """How many ``ttstf``/``stf`` requests are still waiting for the avatar to speak."""
        return self._analyzing

    def deadline(self) -> float | None:
        """When :meth:`tick` must next run to turn SPEAKING off (same clock as ``now``), or
        ``None`` when no timer runs."""
        return self._deadline

    def __repr__(self) -> str:
        names = ",".join(sorted(state.value for state in self.active)) or "idle"
        return (
            f"ChatStateMachine({names}, analyzing={self._analyzing}, deadline={self._deadline!r})"
        )

    # ------------------------------------------------------------------ events

    def set(self, state: ChatState, on: bool) -> frozenset[ChatState] | None:
        """Turn LLM, TTS or RECORDING on or off.

        ANALYZING and SPEAKING have their own rules (:meth:`analyzing_up`, :meth:`on_stf`), so
        passing them here is a programming error (:class:`InvalidInputError`).
        """
        if state not in _ON_OFF_STATES:
            raise InvalidInputError(
                f"ChatStateMachine.set() only handles LLM, TTS and RECORDING, not {state!s}"
            )
        before = self.active
        if on:
            self._flags.add(state)
        else:
            self._flags.discard(state)
        return self._changed(before)

    def analyzing_up(self) -> frozenset[ChatState] | None:
        """One more request (``ttstf`` or ``stf`` upload) is waiting for the avatar."""
        before = self.active
        self._analyzing += 1
        return self._changed(before)

    def analyzing_down(self) -> frozenset[ChatState] | None:
        """One waiting request is done or failed; the count never goes below zero."""
        before = self.active
        self._analyzing = max(0, self._analyzing - 1)
        return self._changed(before)

    def on_stf(self, duration_ms: float, now: float) -> frozenset[ChatState] | None:
        """The server started a clip of ``duration_ms``: see the class docstring for the rule."""
        before = self.active
        self._expire(now)
        if self._analyzing == 0 and not self._speaking:
            return self._changed(before)
        duration = _clean_duration_ms(duration_ms)
        self._speaking = True
        self._analyzing = max(0, self._analyzing - 1)
        if self._deadline is None or self._last_stf is None or self._remaining_ms is None:
            remaining = duration + FIRST_STF_SLACK_MS
        else:
            # A clock that steps backwards must not shorten the timer: count no time as passed.
            elapsed_ms = max(0.0, now - self._last_stf) * 1000.0
            remaining = self._remaining_ms + duration + NEXT_STF_SLACK_MS - elapsed_ms
        self._last_stf = now
        self._remaining_ms = remaining
        self._deadline = now + remaining / 1000.0
        return self._changed(before)

    def tick(self, now: float) -> frozenset[ChatState] | None:
        """Let time pass: at or after the deadline, SPEAKING turns off and the timer disarms."""
        before = self.active
        self._expire(now)
        return self._changed(before)

    def clear(self) -> frozenset[ChatState] | None:
        """``clear_buffer``: every state idle, the ANALYZING count zero, the timer disarmed."""
        before = self.active
        self._analyzing = 0
        self._flags.clear()
        self._speaking = False
        self._disarm()
        return self._changed(before)

    # ------------------------------------------------------------------ internals

    def _expire(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline:
            self._speaking = False
            self._disarm()

    def _disarm(self) -> None:
        self._last_stf = None
        self._remaining_ms = None
        self._deadline = None

    def _changed(self, before: frozenset[ChatState]) -> frozenset[ChatState] | None:
        after = self.active
        return None if after == before else after
