"""The whole-exchange deadline of a blocking ``requests`` exchange, and the pools that allow it.

``requests`` bounds each read, not an exchange: a server that sends a byte just before every
read timeout keeps the caller forever. :func:`mount_deadline_adapters` gives a session pools (and
connections) that tell the watch of the exchange running on this thread (``connection_watched``)
which connection it took, and its socket as soon as there is one; :class:`ExchangeWatch` asks the
one deadline thread (:mod:`perso_sync._deadlines`) to shut that socket down when the deadline
passes, which wakes the blocked read. Used by every REST call (:mod:`perso_sync._rest`) and, with
a watch of its own, by the ``process_llm`` stream (:mod:`perso_sync._llm_caller`).

Threads: the pools and connections report on the exchange's thread; the deadline fires on
``perso-http-deadline``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.poolmanager
from requests.adapters import HTTPAdapter

from perso_sync import _deadlines

__all__ = [
    "ConnectionWatch",
    "ExchangeWatch",
    "connection_watched",
    "mount_deadline_adapters",
    "watched",
]

_watching = threading.local()  # the ExchangeWatch of the exchange running on this thread
_NO_SOCKET_YET_RETRY = 0.05  # seconds: a connection still being set up is checked again


class ExchangeWatch:
    """Cuts one HTTP exchange off at its deadline by shutting its socket down.

    ``requests`` offers only per-read timeouts; a server that sends a byte just before each
    would expire keeps the caller forever. At the deadline, the process-wide deadline thread
    (``_deadlines``) shuts the socket of the connection the exchange took from the pool
    (``_DeadlinePoolMixin`` tells it which): the blocked read returns at once, ``requests``
    raises, and ``expired`` tells the error mapping that this was the deadline, not the server
    hanging up.

    It keeps the socket as soon as the connection has one (reused, or just connected): with
    ``Connection: close`` urllib3 hands it to the response with the headers (``sock`` is None
    from then on). The socket object, never its descriptor number: a closed one has none (-1),
    so a late shutdown fails harmlessly rather than reach a descriptor reused since.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._connection: Any = None
        self._sock: object = None  # the connection's socket, kept past a hand-over
        self._released = False  # the connection went back to the pool: nothing left to cut
        self._finished = False
        self._lock = threading.Lock()
        _deadlines.watch(self, time.monotonic() + seconds)

    def attach(self, connection: Any) -> None:
        with self._lock:
            if self._finished:
                return
            self._connection, self._released = connection, False
            self._sock = getattr(connection, "sock", None)  # None until a new one connects
            if self.expired:
                self._shut()

    def release(self, connection: Any) -> None:
        """``connection`` goes back to the pool: another exchange may read on it from now on."""
        with self._lock:
            if connection is not None and connection is self._connection:
                self._connection, self._sock, self._released = None, None, True

    def expire(self, now: float) -> float | None:
        """The deadline passed (the watcher's thread). No socket to shut yet: look again soon."""
        with self._lock:
            if self._finished:
                return None
            self.expired = True
            # Still connecting (the connect timeout bounds that) or not yet taken from the
            # pool: the watcher looks again shortly rather than let the exchange run unbounded.
            return None if self._shut() else now + _NO_SOCKET_YET_RETRY

    def _shut(self) -> bool:  # under the lock: attach, release and finish change the socket
        if self._released:
            return True
        sock = self._sock
        if sock is None:  # still connecting: the TLS handshake runs on the plain socket
            sock = getattr(self._connection, "sock", None)
            if sock is None:
                return False
        _deadlines.shut_socket(sock)
        return True

    @property
    def finished(self) -> bool:
        return self._finished

    def finish(self) -> None:
        """Stop watching: the deadline no longer applies (the watcher drops it when due)."""
        with self._lock:
            self._finished = True
            # It stays in the heap until due: it must not keep a connection or socket alive.
            self._connection = self._sock = None
        _deadlines.forget()


class ConnectionWatch(Protocol):
    """What learns the connection an exchange got from the pool (:func:`connection_watched`)."""

    def attach(self, connection: Any) -> None:
        """``connection`` (urllib3's) now carries the exchange: called when the pool gives it
        out (connected or not yet), and again, same connection, right after it connects."""


class _DeadlinePoolMixin:
    """Tells this thread's exchange the connection it took from, and gave back to, the pool."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        watch: ConnectionWatch | None = getattr(_watching, "current", None)
        if watch is not None:
            watch.attach(connection)
        return connection

    def _put_conn(self, conn: Any) -> None:
        watch = getattr(_watching, "current", None)
        if isinstance(watch, ExchangeWatch):
            watch.release(conn)
        super()._put_conn(conn)  # type: ignore[misc]


class _DeadlineConnectionMixin:
    """Tells the exchange on this thread that its connection has just connected (its socket)."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        watch: ConnectionWatch | None = getattr(_watching, "current", None)
        if watch is not None:
            watch.attach(self)


class _DeadlineHTTPConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPConnection): ...


class _DeadlineHTTPSConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPSConnection): ...


class _DeadlineHTTPPool(_DeadlinePoolMixin, urllib3.HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(_DeadlinePoolMixin, urllib3.HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_DEADLINE_POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """``requests``' adapter whose pools report connections to the exchange's watch."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_DEADLINE_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # HTTP(S) proxies use the standard pools (replaced); SOCKS proxies bring their own
        # (kept: only the connect/read timeouts apply through them).
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = dict(_DEADLINE_POOLS)
        return manager


def mount_deadline_adapters(
    session: requests.Session, pool_maxsize: int = requests.adapters.DEFAULT_POOLSIZE
) -> requests.Session:
    """Make ``session`` keep the whole-exchange deadline (its http/https adapters replaced):
    its pools tell the :func:`connection_watched` watch which connection a request took."""
    session.mount("http://", _DeadlineAdapter(pool_maxsize=pool_maxsize))
    session.mount("https://", _DeadlineAdapter(pool_maxsize=pool_maxsize))
    return session


@contextlib.contextmanager
def connection_watched(watch: ConnectionWatch) -> Iterator[None]:
    """Within the block, a session with :func:`mount_deadline_adapters` hands ``watch`` the
    connection each request made on this thread takes from the pool."""
    previous = getattr(_watching, "current", None)
    _watching.current = watch
    try:
        yield
    finally:
        _watching.current = previous


@contextlib.contextmanager
def watched(seconds: float) -> Iterator[ExchangeWatch]:
    watch = ExchangeWatch(seconds)
    try:
        with connection_watched(watch):
            yield watch
    finally:
        watch.finish()
