"""Blocking HTTP for the Perso REST endpoints: the only module that imports ``requests``.

One ``RestTransport`` per client owns one ``requests.Session`` (connection reuse) and does:

- the ``PersoLive-APIKey`` header on account-scoped calls only (session-scoped calls never
  carry it: the session id is their credential);
- connect/read timeouts on every request (default 5 s / 30 s), and a deadline on the whole
  exchange (connect, sending, headers and body; default connect + read): a server that drips
  one byte at a time, or sends a body of keep-alive whitespace that never ends, is cut off at
  the deadline with ``PersoTimeoutError``, since a per-read timeout alone would never fire. The
  deadline is kept by the connection pools of the client's own ``requests.Session`` (the one
  deadline thread of ``_deadlines`` shuts the socket of an exchange that outlives it); a
  session you pass in keeps its own adapters and only the connect/read timeouts apply to it;
- the mapping of every failure to our errors, most specific first, ``raise ... from exc``:
  timeouts → ``PersoTimeoutError``, refused/reset/DNS/cut-off bodies → ``PersoConnectionError``,
  a non-2xx answer → ``ApiError`` (``_error_map``), a 2xx body that is not JSON →
  ``InvalidResponseError``;
- retries with tenacity for GETs only: connection errors, connect timeouts, 502/503/504 and 429
  (honouring ``Retry-After`` up to a cap; a server asking for longer gets no retry), exponential
  backoff with jitter. POSTs are never retried: a session id must never be created twice, and a
  lost answer does not prove the request was not processed;
- redirects are not followed: ``requests`` would carry the API key header to whatever host the
  ``Location`` names. A 3xx becomes an ``ApiError`` that says where the server pointed;
- DEBUG logging on the ``perso_sync`` logger with sensitive headers masked;
- the API key is held as a :class:`SecretStr` (its ``repr``/``str``/formatting show a mask),
  and a foreign exception chained under one of ours has the local variables of its frames
  cleared: no frame on an error's traceback shows the raw key to ``pytest -l``, ``traceback``
  with ``capture_locals=True`` or an error tracker's local-variable capture.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import math
import os
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import attrs
import requests
import tenacity
import urllib3
import urllib3.connection
import urllib3.exceptions
import urllib3.poolmanager

from perso_sync._endpoints import (
    API_KEY_HEADER,
    SENSITIVE_HEADERS,
    USER_AGENT,
    normalize_api_server,
)
from perso_sync._error_map import BODY_EXCERPT_CHARS, UNKNOWN_ERROR, api_error_from_response
from perso_sync._http_watch import ExchangeWatch, mount_deadline_adapters, watched
from perso_sync._validate import refuse_loop_thread
from perso_sync.errors import (
    ApiError,
    ClientClosedError,
    InvalidInputError,
    InvalidResponseError,
    MissingApiKeyError,
    PersoConnectionError,
    PersoTimeoutError,
)

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_MAX_RETRIES",
    "RETRY_AFTER_CAP",
    "HttpTimeout",
    "RestTransport",
    "SecretStr",
    "mask_headers",
    "parse_retry_after",
]

logger = logging.getLogger("perso_sync")

API_KEY_ENV = "PERSO_INTERACTIVE_API_KEY"
DEFAULT_MAX_RETRIES = 2
RETRY_AFTER_CAP = 30.0  # seconds; a server asking for a longer pause gets no automatic retry
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_BACKOFF_INITIAL = 0.5
_BACKOFF_MAX = 8.0
_MASK = "[secure]"


@attrs.frozen
class HttpTimeout:
    """HTTP timeouts in seconds: ``connect`` (TCP/TLS set-up), ``read`` (each wait for bytes
    from the server) and ``total``, the deadline of the whole exchange (connect, sending,
    headers and body; ``None`` = ``connect + read``). A per-read timeout alone never fires
    against a server that sends one byte just before it would; ``total`` always does."""

    connect: float = 5.0
    read: float = 30.0
    total: float | None = None

    @classmethod
    def of(cls, value: HttpTimeout | float | tuple[float, float]) -> HttpTimeout:
        """Normalise a number (every phase and the whole exchange), a ``(connect, read)`` pair
        or an ``HttpTimeout``."""
        if isinstance(value, HttpTimeout):
            result = value
        elif isinstance(value, tuple) and len(value) == 2:
            result = cls(connect=value[0], read=value[1])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            result = cls(connect=value, read=value, total=value)
        else:
            raise InvalidInputError(
                f"timeout must be seconds (a number), a (connect, read) pair or an HttpTimeout, "
                f"got {value!r}"
            )
        phases = [result.connect, result.read]
        if result.total is not None:
            phases.append(result.total)
        for phase in phases:
            valid_number = isinstance(phase, (int, float)) and not isinstance(phase, bool)
            if not valid_number or not math.isfinite(phase) or phase <= 0:
                raise InvalidInputError(f"timeout values must be positive seconds, got {value!r}")
        return result

    @property
    def deadline(self) -> float:
        """Seconds the whole exchange may take (``total``, else ``connect + read``)."""
        return self.total if self.total is not None else self.connect + self.read

    def as_requests(self) -> tuple[float, float]:
        """The ``(connect, read)`` tuple ``requests`` takes."""
        return (self.connect, self.read)


class SecretStr(str):
    """A string that never shows itself: ``repr``, ``str`` and formatting give a mask.

    HTTP libraries still send the real characters (they encode the string, which reads its
    data, not its ``str()``). Holding the API key as one keeps it out of every rendering of a
    frame's local variables (``pytest -l``, ``traceback`` with ``capture_locals``, Sentry).
    """

    __slots__ = ()

    def __new__(cls, value: str) -> SecretStr:
        # str(obj) would call our own __str__ (the mask) when value is already a SecretStr;
        # str.__str__ reads the characters themselves.
        return super().__new__(cls, str.__str__(value))

    def __repr__(self) -> str:
        return repr(_MASK)

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return format(_MASK, spec)


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with every sensitive value (API key, cookies) replaced."""
    return {
        key: (_MASK if key.lower() in SENSITIVE_HEADERS else value)
        for key, value in headers.items()
    }


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def _checked_api_key(api_key: str | None) -> SecretStr | None:
    if api_key is None:
        return None
    if not isinstance(api_key, str):
        raise InvalidInputError(f"api_key must be a string, got {type(api_key).__name__}")
    key = SecretStr(api_key.strip())  # str methods return plain str: wrap the copy too
    # Checked here, once, because an HTTP library that refuses a header value tends to quote it
    # in its error message, and this value is the secret. The message says where the first bad
    # character is and what kind it is, never the character or the key.
    for position, char in enumerate(key):
        if not char.isascii():
            kind = "a non-ASCII character"
        elif char.isspace():
            kind = "whitespace"
        elif not char.isprintable():
            kind = "a control character"
        else:
            continue
        raise InvalidInputError(
            f"api_key cannot be sent in an HTTP header: it contains {kind} at position "
            f"{position} (of {len(key)}); keys are printable ASCII without spaces, so check "
            "for a copy-paste artifact (a smart quote, an ellipsis, a non-breaking space)"
        )
    return key or None


def _new_http_session() -> requests.Session:
    return mount_deadline_adapters(requests.Session())


class _RetryableStatus(Exception):
    """Internal: a GET answered with a status worth retrying. Never leaves this module."""

    def __init__(self, response: requests.Response, retry_after: float | None) -> None:
        super().__init__(response.status_code)
        self.response = response
        self.retry_after = retry_after


class _NoBody:
    pass


_NO_BODY: Any = _NoBody()


def _scrub(exc: requests.RequestException) -> None:
    # The foreign exception stays reachable as __cause__; its request object carries our headers
    # (the API key), so drop the reference before chaining it. The frames of requests, urllib3
    # and http.client on its traceback (and on the exceptions chained under it) hold the request
    # in their local variables, some as plain bytes (the header block http.client sends):
    # clear those locals. The file/line entries stay for debugging; frames still running (ours)
    # are left alone by ``clear_frames``.
    exc.request = None
    exc.response = None
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        reason = getattr(current, "reason", None)  # urllib3's MaxRetryError
        if isinstance(reason, BaseException):
            pending.append(reason)


def _is_read_timeout(exc: requests.exceptions.ConnectionError) -> bool:
    # requests reports a read timeout hit while reading the body as a ConnectionError.
    return bool(exc.args) and isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError)


def _close_connection_pools(session: requests.Session) -> None:
    """Close every pooled connection of ``session`` now.

    ``Session.close()`` only forgets urllib3's pools (urllib3 2.8 registers no dispose hook), so
    their sockets stay open until the garbage collector finds them, which is never while an
    ``ApiError``'s traceback still references the response.
    """
    for adapter in session.adapters.values():
        pools = getattr(getattr(adapter, "poolmanager", None), "pools", None)
        if pools is None:
            continue
        for key in list(pools.keys()):
            pool = pools.get(key)
            if pool is not None:
                pool.close()


class RestTransport:
    """Blocking JSON-over-HTTP to one Perso server, shared by every call of one client.

    Thread-safe: calls may run concurrently from several threads (``get_all_settings`` does).
    """

    def __init__(
        self,
        *,
        api_server: str,
        api_key: str | None,
        timeout: HttpTimeout | float | tuple[float, float] = HttpTimeout(),
        max_retries: int = DEFAULT_MAX_RETRIES,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry_after_cap: float = RETRY_AFTER_CAP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidInputError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        server = normalize_api_server(api_server) if isinstance(api_server, str) else ""
        if not server.startswith(("http://", "https://")):
            raise InvalidInputError(
                f"api_server must be an http:// or https:// URL, got {api_server!r}"
            )
        self.api_server = server
        self._api_key = _checked_api_key(api_key)
        self.timeout = HttpTimeout.of(timeout)
        self.max_retries = max_retries
        self._owns_session = session is None
        self._session = session if session is not None else _new_http_session()
        self._pid = os.getpid()
        self._sleep = sleep
        self._retry_after_cap = retry_after_cap
        self._clock = clock
        self._closed = False
        self._lock = threading.Lock()

    # -- public ----------------------------------------------------------------------------

    @property
    def has_api_key(self) -> bool:
        """True when an API key is configured (the key itself is never exposed)."""
        return self._api_key is not None

    def require_api_key(self) -> None:
        """Raise ``MissingApiKeyError`` unless an API key is configured."""
        if self._api_key is None:
            raise MissingApiKeyError(
                f"this call needs an API key: pass api_key=... or set ${API_KEY_ENV}"
            )

    def get(self, path: str, *, account: bool, params: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` and return its decoded JSON (None for an empty body); retried."""
        return self.request("GET", path, account=account, params=params)

    def post(
        self,
        path: str,
        *,
        account: bool,
        json_body: Any = _NO_BODY,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> Any:
        """POST ``path`` (a JSON body, or multipart ``files``/``data``); never retried."""
        return self.request(
            "POST", path, account=account, json_body=json_body, files=files, data=data
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        account: bool,
        params: Mapping[str, str] | None = None,
        json_body: Any = _NO_BODY,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request and return its decoded JSON body (None when the body is empty).

        Raises ``ApiError`` (non-2xx), ``PersoConnectionError`` / ``PersoTimeoutError``
        (transport), ``InvalidResponseError`` (2xx that is not JSON), ``MissingApiKeyError``
        (account-scoped call without a key).
        """
        if self._closed:
            raise ClientClosedError("this PersoClient is closed; create a new one")
        # A blocking HTTP call on the runtime's loop (an async tool) would stall every session.
        refuse_loop_thread(f"{method} {path}")
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if account:
            self.require_api_key()
            assert self._api_key is not None
            headers[API_KEY_HEADER] = self._api_key
        body: bytes | None = None
        if json_body is not _NO_BODY:
            try:
                body = json.dumps(
                    json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                ).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"the request body cannot be sent as JSON: {exc}") from exc
            headers["Content-Type"] = "application/json"
        url = self.api_server + path
        send = _Send(method, url, headers, params, body, files, data)
        response = self._send_with_policy(send, retry=method == "GET")
        return self._read(send, response)

    def close(self) -> None:
        """Close the HTTP connections (if the session is ours). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_session:
            _close_connection_pools(self._session)
            self._session.close()

    @property
    def closed(self) -> bool:
        """True once ``close()`` has run."""
        return self._closed

    # -- sending ---------------------------------------------------------------------------

    def _send_with_policy(self, send: _Send, *, retry: bool) -> requests.Response:
        if not retry or self.max_retries == 0:
            return self._send_once(send, raise_retryable=False)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception(self._should_retry),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,  # users see our error from the last attempt, never tenacity.RetryError
        )
        try:
            response: requests.Response = retrying(self._send_once, send, raise_retryable=True)
        except _RetryableStatus as exc:  # out of attempts (or told to wait too long)
            return exc.response
        return response

    def _send_once(self, send: _Send, *, raise_retryable: bool) -> requests.Response:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "HTTP %s %s params=%s headers=%s",
                send.method,
                send.url,
                dict(send.params or {}),
                mask_headers(send.headers),
            )
        started = time.monotonic()
        with (
            watched(self.timeout.deadline) as watch,
            self._mapped_transport_errors(send, watch),
        ):
            response = self._http_session().request(
                send.method,
                send.url,
                params=send.params,
                data=send.body if send.files is None else send.data,
                files=send.files,
                headers=send.headers,
                timeout=self.timeout.as_requests(),
                allow_redirects=False,
            )
        logger.debug(
            "HTTP %s %s -> %d (%d bytes, %.1f ms)",
            send.method,
            send.url,
            response.status_code,
            len(response.content),
            (time.monotonic() - started) * 1000,
        )
        if raise_retryable and response.status_code in _RETRY_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
            raise _RetryableStatus(response, retry_after)
        return response

    def _http_session(self) -> requests.Session:
        # After os.fork() (gunicorn pre-fork workers) the pooled sockets belong to the parent
        # too; two processes on one socket corrupt each other's answers. A child starts its own
        # pool; the parent's sockets are left alone (closing them here could disturb it).
        if self._owns_session and self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._session = _new_http_session()
                    self._pid = os.getpid()
        return self._session

    @contextlib.contextmanager
    def _mapped_transport_errors(self, send: _Send, watch: ExchangeWatch) -> Iterator[None]:
        where = f"{send.method} {send.url}"
        try:
            try:
                yield
            except requests.exceptions.RequestException as exc:
                if not watch.expired:
                    raise
                _scrub(exc)
                raise PersoTimeoutError(
                    f"{where}: the whole exchange (connect, headers and body) took longer than "
                    f"{watch.seconds} s"
                ) from exc
        except requests.exceptions.ConnectTimeout as exc:  # before ConnectionError: it is both
            _scrub(exc)
            raise PersoTimeoutError(
                f"{where}: no connection within {self.timeout.connect} s"
            ) from exc
        except requests.exceptions.ReadTimeout as exc:
            _scrub(exc)
            raise PersoTimeoutError(
                f"{where}: no answer within {self.timeout.read} s (read timeout)"
            ) from exc
        except requests.exceptions.Timeout as exc:
            _scrub(exc)
            raise PersoTimeoutError(f"{where}: timed out: {exc}") from exc
        except requests.exceptions.SSLError as exc:
            _scrub(exc)
            raise PersoConnectionError(f"{where}: TLS failed: {exc}") from exc
        except requests.exceptions.ConnectionError as exc:
            _scrub(exc)
            if _is_read_timeout(exc):
                raise PersoTimeoutError(
                    f"{where}: no answer within {self.timeout.read} s (read timeout)"
                ) from exc
            raise PersoConnectionError(f"{where}: connection failed: {exc}") from exc
        except (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            _scrub(exc)
            raise PersoConnectionError(f"{where}: the answer was cut off: {exc}") from exc
        except requests.exceptions.InvalidHeader as exc:
            _scrub(exc)
            if exc.args and isinstance(exc.args[0], urllib3.exceptions.InvalidHeader):
                # Raised while reading the answer (e.g. two Content-Length headers that
                # disagree): the server's fault. Its text quotes the server's headers only.
                raise InvalidResponseError(
                    f"{where}: the server answered with a malformed header: {exc.args[0]}"
                ) from exc
            # requests quotes the offending header value, which may be a secret: say less.
            raise InvalidInputError(f"{where}: a header value cannot be sent") from None
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ) as exc:
            _scrub(exc)
            raise InvalidInputError(f"{where}: cannot send this request: {exc}") from exc
        except requests.exceptions.RequestException as exc:
            _scrub(exc)
            raise PersoConnectionError(f"{where}: request failed: {exc}") from exc

    # -- retry policy ----------------------------------------------------------------------

    def _should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, _RetryableStatus):
            return exc.retry_after is None or exc.retry_after <= self._retry_after_cap
        if isinstance(exc, PersoTimeoutError):
            # Only a connect timeout: the request never reached the server. A read timeout is
            # not retried (the user already waited the full read timeout once).
            return isinstance(exc.__cause__, requests.exceptions.ConnectTimeout)
        # Network failures only (refused, reset, DNS, a body cut off): the same request may well
        # work again. Anything else from requests is not expected to change on a retry.
        return isinstance(exc, PersoConnectionError) and isinstance(
            exc.__cause__,
            (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError),
        )

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _RetryableStatus) and exc.retry_after is not None:
            return float(exc.retry_after)
        backoff = min(_BACKOFF_MAX, _BACKOFF_INITIAL * 2.0 ** (retry_state.attempt_number - 1))
        return backoff * (1 - 0.25 * random.random())  # jitter: clients do not retry in step

    def _log_retry(self, retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        reason = f"status {exc.response.status_code}" if isinstance(exc, _RetryableStatus) else exc
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.debug(
            "retrying after %s (attempt %d of %d) in %.2f s",
            reason,
            retry_state.attempt_number,
            self.max_retries + 1,
            delay,
        )

    # -- reading ---------------------------------------------------------------------------

    def _read(self, send: _Send, response: requests.Response) -> Any:
        status = response.status_code
        body = response.content
        if 300 <= status < 400:
            self._raise_redirect(response)
        if not 200 <= status < 300:
            raise api_error_from_response(status, body, response.headers.get("Content-Type"))
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            excerpt = body[:BODY_EXCERPT_CHARS].decode("utf-8", errors="replace")
            raise InvalidResponseError(
                f"{send.method} {send.url} answered with a body that is not JSON: {excerpt!r}",
                status,
            ) from exc

    @staticmethod
    def _raise_redirect(response: requests.Response) -> NoReturn:
        location = response.headers.get("Location", "")
        raise ApiError(
            response.status_code,
            UNKNOWN_ERROR,
            f"Server redirected to {location!r}; perso_sync does not follow redirects (the API "
            "key would go along): use the final address as api_server",
        )


@attrs.frozen
class _Send:
    method: str
    url: str
    headers: dict[str, str] = attrs.field(repr=lambda headers: repr(mask_headers(headers)))
    params: Mapping[str, str] | None
    body: bytes | None
    files: Mapping[str, tuple[str, bytes, str]] | None
    data: Mapping[str, str] | None
