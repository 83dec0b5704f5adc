"""A session's subscriber tables and its callback dispatcher, without a session around them."""

from __future__ import annotations

import threading

import pytest

from perso_sync._session_subscribers import SessionSubscribers
from perso_sync.errors import InvalidInputError, SessionClosedError
from perso_sync.models import ChatState
from tests._wait import wait_until

WAIT = 5.0


def _always_open() -> None:
    return None


@pytest.fixture
def subscribers() -> SessionSubscribers:
    return SessionSubscribers(threading.RLock(), "sid-subscribers")


def test_removing_a_replaced_error_handler_keeps_the_new_one(
    subscribers: SessionSubscribers,
) -> None:
    first: list[BaseException] = []
    second: list[BaseException] = []
    remove_first = subscribers.error_handler.set(first.append)
    subscribers.error_handler.set(second.append)

    remove_first()  # too late: it is no longer the handler, so nothing is removed
    error = RuntimeError("background failure")
    subscribers.report_error(error)

    wait_until(lambda: second, WAIT, "the current error handler")
    assert second == [error]
    assert first == []


def test_a_raising_subscriber_goes_to_the_error_handler_and_delivery_goes_on(
    subscribers: SessionSubscribers,
) -> None:
    errors: list[BaseException] = []
    delivered: list[frozenset[ChatState]] = []
    subscribers.error_handler.set(errors.append)

    def broken(_: frozenset[ChatState]) -> None:
        raise ValueError("subscriber bug")

    subscribers.add_state_subscriber(broken, _always_open)
    subscribers.add_state_subscriber(delivered.append, _always_open)
    subscribers.notify_states(frozenset({ChatState.LLM}))
    subscribers.notify_states(frozenset())

    wait_until(lambda: len(delivered) == 2, WAIT, "both notifications")
    subscribers.dispatcher.flush(WAIT)
    assert delivered == [frozenset({ChatState.LLM}), frozenset()]
    assert [str(error) for error in errors] == ["subscriber bug", "subscriber bug"]


def test_unsubscribing_stops_delivery(subscribers: SessionSubscribers) -> None:
    logs: list[int] = []
    unsubscribe = subscribers.add_log_subscriber(lambda log: logs.append(len(log)), _always_open)
    subscribers.notify_log([])
    unsubscribe()
    unsubscribe()  # idempotent
    subscribers.notify_log([])

    subscribers.dispatcher.flush(WAIT)
    assert logs == [0]


def test_registering_checks_the_callback_and_the_session(subscribers: SessionSubscribers) -> None:
    def closed() -> None:
        raise SessionClosedError("session sid-subscribers is closed")

    with pytest.raises(InvalidInputError, match="callable"):
        subscribers.add_close_callback("not a function", _always_open)  # type: ignore[arg-type]
    with pytest.raises(SessionClosedError):
        subscribers.add_close_callback(print, closed)
    assert subscribers.take_close_callbacks() == []


def test_close_callbacks_are_handed_out_once(subscribers: SessionSubscribers) -> None:
    calls: list[bool] = []
    subscribers.add_close_callback(calls.append, _always_open)

    assert subscribers.take_close_callbacks() == [calls.append]
    assert subscribers.take_close_callbacks() == []
