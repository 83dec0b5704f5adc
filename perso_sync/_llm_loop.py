"""The loop-side LLM turn engine: runs ON the runtime loop thread (httpx ``AsyncClient``).

``Session.process_chat`` / ``LlmProcessor.process_chat`` (``LlmProcessor.run_chat_turn``) drive
a turn here one step at a time, acting between steps (avatar speech, chat log); ``clear_buffer``
cancels it. Each step runs in one cancel scope carrying the turn deadline and, while reading, the
idle one. Sync client tools of either engine run from here too (:func:`run_tool_round`: async
tools as tasks, sync ones on the tool workers, all at once). The ``process_llm`` iterator reads
on the caller's thread instead (``_llm_caller``).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from perso_sync._llm_common import (
    CLOSE_TIMEOUT,
    ERROR_BODY_LIMIT,
    REQUEST_HEADERS,
    MessageHistory,
    TurnProgress,
    api_error,
    check_transport_side,
    map_transport_error,
    request_timeout,
)
from perso_sync._llm_turn import LlmTurn, ToolRun, TurnStep
from perso_sync._runtime import get_runtime, run_sync_off_loop
from perso_sync._sse import SseParser
from perso_sync.errors import LLMError

if TYPE_CHECKING:
    import anyio
    import httpx

    from perso_sync.llm import ChatTool, LlmProcessor

__all__ = ["async_client", "run_tool_round"]

# (runtime, client): the client every processor without a custom transport uses; only touched
# on that runtime's loop thread.
_shared_client: tuple[object, httpx.AsyncClient] | None = None


def async_client(transport: object | None) -> httpx.AsyncClient:
    """The shared client (``transport`` None), or a new one over ``transport`` (loop thread).

    Without a custom transport every processor shares one client per runtime (building one costs
    tens of milliseconds for its TLS context, and the pool is shared); a fork gets a fresh one
    with its fresh runtime. Timeouts are set per request.
    """
    import httpx

    global _shared_client
    if transport is None:
        runtime = get_runtime()
        shared = _shared_client
        if shared is None or shared[0] is not runtime:
            shared = _shared_client = (runtime, httpx.AsyncClient())
        return shared[1]
    check_transport_side(transport, sync=False)
    return httpx.AsyncClient(transport=transport)  # type: ignore[arg-type]


async def run_tool_round(progress: TurnProgress, runs: Sequence[ToolRun]) -> dict[str, Any]:
    """Run a tool round on the loop, every tool at once; the results by call id (a raising tool,
    or arguments that could not be decoded, give the turn's error result)."""
    import anyio

    results: dict[str, Any] = {}
    error_result = progress.tool_error_result

    async def run_one(run: ToolRun) -> None:
        if run.arguments_error is not None:
            results[run.call_id] = error_result(ValueError(run.arguments_error))
            return
        tool = progress.tools[run.name]
        try:
            if tool.is_async():
                value = await tool.call(run.arguments)
            else:
                value = await run_sync_off_loop(tool.call, run.arguments)
                if inspect.isawaitable(value):  # a plain function that returned a coroutine
                    value = await value
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # noqa: BLE001 -- a tool's failure is its result
            value = error_result(exc)
        results[run.call_id] = value

    async with anyio.create_task_group() as task_group:
        for run in runs:
            task_group.start_soon(run_one, run)
    return results


class TurnEngine:
    """Drives one LlmTurn on the loop, one step per :meth:`next_step` call: a request, the
    stream's reads up to the next event, or a tool round."""

    def __init__(
        self,
        processor: LlmProcessor,
        message: str,
        tools: Sequence[ChatTool],
        error_result: Callable[[BaseException], Any],
        history: MessageHistory,
    ) -> None:
        self._processor = processor
        self._progress = TurnProgress(message, tools, history, error_result)
        self.turn: LlmTurn = self._progress.turn
        self._response: httpx.Response | None = None
        self._reader: AsyncIterator[bytes] | None = None
        self._parser = SseParser()
        self._deadline: float | None = None  # the turn_timeout's, set by the first step
        self._scope: anyio.CancelScope | None = None  # the running step's
        self._new_scope: type[anyio.CancelScope] | None = None  # set by the first step
        self._clock: Callable[[], float] = _no_clock
        self.abort_requested = False  # set by cancel_step

    @property
    def finished(self) -> bool:
        return self._progress.finished

    async def next_step(self) -> TurnStep | None:
        """Do the next unit of work; None once the turn is over, or when :meth:`cancel_step`
        (an abort) cancelled it."""
        import anyio

        if self.finished:
            return None
        if self._new_scope is None:
            # The loop's clock and the scope class of the running backend, looked up once per
            # turn: anyio.current_time() and anyio.CancelScope() each find the backend again on
            # every call, a measurable share of a step when every network read is one.
            self._clock = asyncio.get_running_loop().time
            self._new_scope = type(anyio.CancelScope())
        now = self._clock()
        turn_timeout = self._processor._turn_timeout
        if turn_timeout is not None and self._deadline is None:
            self._deadline = now + turn_timeout
        turn_deadline = math.inf if self._deadline is None else self._deadline
        # Idle = no *event* for `timeout` seconds while reading: bytes that complete none
        # (keep-alive comments, a drip) are no progress, so httpx's per-read timeout alone would
        # never fire. One cancel scope per step carries both deadlines and the abort (entering
        # and leaving a scope is most of the loop's work per network read).
        idle = self._processor._timeout
        reading = self._progress.pending is None and self._reader is not None
        idle_deadline = now + idle if reading and idle is not None else math.inf
        step: TurnStep | None = None
        with self._new_scope(deadline=min(turn_deadline, idle_deadline)) as scope:
            self._scope = scope
            if self.abort_requested:
                scope.cancel()
            step = await self._next()
        self._scope = None
        if scope.cancelled_caught and self.abort_requested:
            return None  # the caller aborts the turn
        if step is None or scope.cancelled_caught:
            await self._close_response()
            if idle_deadline < turn_deadline:
                return self._progress.idle_expired(idle)
            return self._progress.turn_expired(turn_timeout)
        if self._progress.book(step):
            await self._close_response()
        return step

    def cancel_step(self) -> None:
        """Abort: cancel the running step, if any, and every later one (loop thread only)."""
        self.abort_requested = True
        if self._scope is not None:
            self._scope.cancel()

    async def _next(self) -> TurnStep:
        progress = self._progress
        if progress.pending is not None:
            runs, progress.pending = progress.pending.runs, None
            return self.turn.on_tool_results(await run_tool_round(progress, runs))
        if self._reader is None:
            return await self._open()
        return await self._read()

    async def _open(self) -> TurnStep:
        import httpx

        client = self._processor._async_client()
        request = client.build_request(
            "POST",
            self._processor._url,
            content=self._progress.request_content(),
            headers=REQUEST_HEADERS,
            timeout=request_timeout(self._processor._timeout),
        )
        self._parser = SseParser()
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            return self.turn.on_error(LLMError(map_transport_error(exc)))
        if not response.is_success:
            try:
                error_body = await _read_limited(response, ERROR_BODY_LIMIT)
            except httpx.HTTPError:
                error_body = b""
            finally:
                await response.aclose()
            content_type = response.headers.get("content-type")
            error = api_error(response.status_code, error_body, content_type)
            return self.turn.on_error(LLMError(error))
        self._response = response
        self._reader = response.aiter_bytes()  # decoded (gzip), as it arrives
        return TurnStep()

    async def _read(self) -> TurnStep:
        import httpx

        assert self._reader is not None
        # Reads until some event completes; the idle deadline is next_step's scope's.
        while True:
            try:
                data = await self._reader.__anext__()
            except StopAsyncIteration:
                await self._close_response()
                return self.turn.on_stream_end(self._parser.close())
            except httpx.HTTPError as exc:
                await self._close_response()
                return self.turn.on_error(LLMError(map_transport_error(exc)))
            events = self._parser.feed(data)
            if events:
                return self.turn.on_events(events)

    async def _close_response(self) -> None:
        import anyio

        response, self._response, self._reader = self._response, None, None
        if response is not None:
            # Shielded (and bounded) so that a cancelled turn still closes its connection.
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await response.aclose()

    async def aclose(self) -> None:
        self._progress.finished = True
        await self._close_response()


def _no_clock() -> float:
    raise AssertionError("the turn's clock is set by its first step")


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for data in response.aiter_bytes():
        body += data
        if len(body) >= limit:
            break
    return bytes(body[:limit])
