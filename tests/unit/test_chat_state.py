"""ChatStateMachine: each rule of docs/PROTOCOL.md §9 with an explicit clock, then random
sequences."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from perso_sync._chat_state import ChatStateMachine
from perso_sync.errors import InvalidInputError
from perso_sync.models import ChatState

A = ChatState.ANALYZING
S = ChatState.SPEAKING
LLM = ChatState.LLM
TTS = ChatState.TTS
REC = ChatState.RECORDING


def fs(*states: ChatState) -> frozenset[ChatState]:
    return frozenset(states)


# --------------------------------------------------------------------------- on/off states


@pytest.mark.parametrize("state", [LLM, TTS, REC])
def test_on_off_states_notify_only_on_change(state: ChatState) -> None:
    m = ChatStateMachine()
    assert m.set(state, True) == fs(state)
    assert m.set(state, True) is None
    assert m.set(state, False) == fs()
    assert m.set(state, False) is None


@pytest.mark.parametrize("state", [A, S])
def test_set_refuses_counted_and_timed_states(state: ChatState) -> None:
    with pytest.raises(InvalidInputError, match="only handles LLM, TTS and RECORDING"):
        ChatStateMachine().set(state, True)


def test_on_off_states_combine_with_analyzing() -> None:
    m = ChatStateMachine()
    m.set(LLM, True)
    assert m.analyzing_up() == fs(LLM, A)
    assert m.set(TTS, True) == fs(LLM, A, TTS)
    assert m.set(LLM, False) == fs(A, TTS)


# --------------------------------------------------------------------------- ANALYZING counting


def test_analyzing_is_reference_counted() -> None:
    m = ChatStateMachine()
    assert m.analyzing_up() == fs(A)
    assert m.analyzing_up() is None  # already active: no notification
    assert m.analyzing_count == 2
    assert m.analyzing_down() is None  # one still pending
    assert m.analyzing_down() == fs()
    assert m.analyzing_count == 0


def test_analyzing_never_goes_negative() -> None:
    m = ChatStateMachine()
    assert m.analyzing_down() is None
    assert m.analyzing_count == 0
    assert m.analyzing_up() == fs(A)  # one up after a spurious down is active again


# --------------------------------------------------------------------------- stf and SPEAKING


def test_first_stf_turns_speaking_on_and_arms_duration_plus_2000() -> None:
    m = ChatStateMachine()
    m.analyzing_up()
    assert m.on_stf(3000, now=10.0) == fs(S)
    assert m.analyzing_count == 0
    assert m.deadline() == pytest.approx(15.0)
    assert m.tick(14.999) is None
    assert m.tick(15.0) == fs()
    assert m.deadline() is None


def test_stf_with_two_pending_keeps_analyzing() -> None:
    m = ChatStateMachine()
    m.analyzing_up()
    m.analyzing_up()
    assert m.on_stf(1000, now=0.0) == fs(A, S)
    assert m.on_stf(1000, now=0.5) == fs(S)
    assert m.analyzing_count == 0


def test_stf_while_idle_is_ignored() -> None:
    m = ChatStateMachine()
    m.set(LLM, True)  # LLM alone does not make an stf count
    assert m.on_stf(1000, now=0.0) is None
    assert m.active == fs(LLM)
    assert m.deadline() is None


def test_stf_while_only_speaking_extends_without_going_negative() -> None:
    m = ChatStateMachine()
    m.analyzing_up()
    m.on_stf(1000, now=0.0)  # deadline 3.0
    assert m.on_stf(1000, now=1.0) is None  # still just SPEAKING
    assert m.analyzing_count == 0
    assert m.deadline() == pytest.approx(5.0)


def test_extension_rule_worked_example() -> None:
    # The example of the class docstring: deadline = previous deadline + duration + 1000 ms.
    m = ChatStateMachine()
    for _ in range(3):
        m.analyzing_up()
    m.on_stf(3000, now=10.0)
    assert m.deadline() == pytest.approx(15.0)
    m.on_stf(1000, now=11.5)
    assert m.deadline() == pytest.approx(17.0)
    m.on_stf(500, now=12.0)
    assert m.deadline() == pytest.approx(18.5)
    assert m.tick(18.4) is None
    assert m.tick(18.5) == fs()


def test_stf_after_expired_deadline_starts_a_new_timer() -> None:
    m = ChatStateMachine()
    m.analyzing_up()
    m.analyzing_up()
    m.on_stf(1000, now=0.0)  # deadline 3.0, ANALYZING still 1
    # tick() did not run before this stf: the old timer expires first, then a first stf again.
    assert m.on_stf(500, now=4.0) == fs(S)
    assert m.deadline() == pytest.approx(6.5)


def test_stf_after_expiry_with_nothing_pending_is_ignored_but_speaking_ends() -> None:
    m = ChatStateMachine()
    m.analyzing_up()
    m.on_stf(1000, now=0.0)
    assert m.on_stf(1000, now=3.0) == fs()  # expiry applied, then ignored
    assert m.deadline() is None


@pytest.mark.parametrize("bad", [-5.0, float("nan"), float("inf"), float("-inf")])
def test_bad_server_duration_counts_as_zero(bad: float) -> None:
    m = ChatStateMachine()
    m.analyzing_up()
    m.on_stf(bad, now=1.0)
    assert m.deadline() == pytest.approx(3.0)


def test_clock_going_backwards_does_not_shorten_timer() -> None:
    m = ChatStateMachine()
    m.analyzing_up()
    m.on_stf(1000, now=5.0)  # deadline 8.0
    m.on_stf(1000, now=4.0)  # elapsed counted as 0
    assert m.deadline() == pytest.approx(4.0 + (3000 + 2000) / 1000)


def test_clear_resets_everything() -> None:
    m = ChatStateMachine()
    m.set(LLM, True)
    m.set(REC, True)
    m.analyzing_up()
    m.analyzing_up()
    m.on_stf(1000, now=0.0)
    assert m.clear() == fs()
    assert m.analyzing_count == 0
    assert m.deadline() is None
    assert m.clear() is None
    assert m.tick(100.0) is None
    assert m.on_stf(1000, now=1.0) is None  # nothing pending after clear


def test_repr_names_states() -> None:
    m = ChatStateMachine()
    assert "idle" in repr(m)
    m.analyzing_up()
    assert "ANALYZING" in repr(m)


# --------------------------------------------------------------------------- random sequences


class ChatStates(RuleBasedStateMachine):
    """Random ttstf/stf/stt/clear/LLM/TTS/time sequences against a simple model."""

    @initialize()
    def setup(self) -> None:
        self.m = ChatStateMachine()
        self.now = 0.0
        self.seen = self.m.active
        self.pending = 0  # model of the ANALYZING count

    def _observe(self, result: frozenset[ChatState] | None) -> None:
        current = self.m.active
        if result is None:
            assert current == self.seen, "the set changed without a notification"
        else:
            assert result != self.seen, "a notification although nothing changed"
            assert result == current
        self.seen = current

    @rule()
    def ttstf(self) -> None:
        self._observe(self.m.analyzing_up())
        self.pending += 1

    @rule(duration=st.floats(min_value=0, max_value=20_000))
    def stf(self, duration: float) -> None:
        deadline = self.m.deadline()
        running = deadline is not None and self.now < deadline
        honoured = self.pending > 0 or running
        self._observe(self.m.on_stf(duration, self.now))
        if not honoured:
            assert S not in self.m.active
            assert self.m.deadline() is None
            return
        self.pending = max(0, self.pending - 1)
        assert S in self.m.active
        new_deadline = self.m.deadline()
        assert new_deadline is not None
        if running:
            assert deadline is not None
            expected = deadline + (duration + 1000) / 1000  # clips queue up
        else:
            expected = self.now + (duration + 2000) / 1000
        assert new_deadline == pytest.approx(expected)

    @rule()
    def stt(self) -> None:
        self._observe(self.m.analyzing_down())
        self.pending = max(0, self.pending - 1)

    @rule()
    def clear(self) -> None:
        self._observe(self.m.clear())
        self.pending = 0
        assert self.m.active == fs()

    @rule(state=st.sampled_from([LLM, TTS, REC]), on=st.booleans())
    def set_flag(self, state: ChatState, on: bool) -> None:
        self._observe(self.m.set(state, on))
        assert (state in self.m.active) is on

    @rule(dt=st.floats(min_value=0, max_value=10))
    def advance(self, dt: float) -> None:
        self.now += dt
        self._observe(self.m.tick(self.now))

    @precondition(lambda self: self.m.deadline() is not None)
    @rule()
    def run_until_deadline(self) -> None:
        deadline = self.m.deadline()
        assert deadline is not None
        self.now = max(self.now, deadline)
        self._observe(self.m.tick(self.now))
        assert S not in self.m.active

    @invariant()
    def analyzing_matches_model(self) -> None:
        assert self.m.analyzing_count == self.pending >= 0
        assert (A in self.m.active) is (self.pending > 0)

    @invariant()
    def speaking_iff_timer(self) -> None:
        deadline = self.m.deadline()
        assert (S in self.m.active) is (deadline is not None)
        # Every rule that moves the clock also ticks, so a running timer is always ahead.
        assert deadline is None or deadline > self.now

    def teardown(self) -> None:
        # Idle eventually: a clear, then time past any deadline, leaves nothing active.
        self.m.clear()
        assert self.m.tick(self.now + 1000.0) is None
        assert self.m.active == fs()


ChatStates.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestChatStates = ChatStates.TestCase
