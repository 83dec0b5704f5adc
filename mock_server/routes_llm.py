"""The ``llm/v2`` route (docs/PROTOCOL.md §6): the scripted assistant's events streamed in the
platform's framing or standard SSE, with the stream faults (truncate, drop, garbage, split).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from mock_server.context import CLIENT_GONE_KEY, FAULT_KEY, MockContext, as_float
from mock_server.errors import error_response
from mock_server.faults import Fault
from mock_server.llm_script import DONE_EVENT
from mock_server.middleware import abort_connection
from mock_server.validation import capability_json_request, tool_definition_problem

log = logging.getLogger("mock_server")


def sse_frame(event: dict[str, Any], framing: str) -> bytes:
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    if not data.isascii():
        try:
            data.encode()
        except UnicodeEncodeError:  # a lone surrogate (echoed from a request): escape it
            data = json.dumps(event, ensure_ascii=True, separators=(",", ":"))
    if framing == "sse":
        return f"data: {data}\r\n\r\n".encode()
    return f"data: {data}\n".encode()


async def llm(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    checked = capability_json_request(request, ctx, "LLM")
    if isinstance(checked, web.Response):
        return checked
    session, body = checked
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error_response(
            400, "validation_error", "required", "This field is required.", "messages"
        )
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        return error_response(
            400, "validation_error", "not_a_list", "Expected a list of tools.", "tools"
        )
    problem = tool_definition_problem(tools)
    if problem is not None:
        return error_response(400, "validation_error", "invalid", problem, "tools")
    session.llm_requests.append(body)
    script = session.llm_script or ctx.llm_script
    server_ids = [s for s in (session.params.get("mcp_servers") or []) if isinstance(s, str)]
    events = script.plan(
        messages,
        tools,
        mcp_tools=lambda name: ctx.catalog.mcp_tool_result(server_ids, name),
        call_ids=session.tool_call_counter,
    )
    settings = ctx.catalog.settings
    framing = script.framing or str(settings.get("llm_framing") or "platform")
    delay = script.delay if script.delay is not None else as_float(settings.get("llm_delay"))
    fault: Fault | None = request.get(FAULT_KEY)
    response = web.StreamResponse(
        status=200,
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"},
    )
    await response.prepare(request)
    try:
        await _stream_events(request, response, events, framing, delay, fault)
    except ConnectionError:
        # The client went away (closed or aborted its stream): nothing left to send to.
        log.debug("LLM stream of a session ended by the client")
        request[CLIENT_GONE_KEY] = True
    return response


def _split_point(frame: bytes) -> int:
    for index, byte in enumerate(frame):
        if byte >= 0xC0:  # the lead byte of a multi-byte UTF-8 sequence
            return index + 1
    return len(frame) // 2


async def _stream_events(
    request: web.Request,
    response: web.StreamResponse,
    events: list[dict[str, Any]],
    framing: str,
    delay: float | None,
    fault: Fault | None,
) -> None:
    newline = "\r\n" if framing == "sse" else "\n"
    if framing == "sse":
        await response.write(b": perso mock stream" + newline.encode())
    cut_at = max(1, len(events) // 2)
    for index, event in enumerate(events):
        if index and delay:
            await asyncio.sleep(delay)
        frame = sse_frame(event, framing)
        if fault is not None and fault.sse == "truncate" and index == cut_at:
            # Cut inside the event; the stream then ends cleanly, without "done".
            await response.write(frame[: len(frame) // 2])
            await response.write_eof()
            return
        if fault is not None and fault.drop and index == cut_at:
            await response.write(frame[: len(frame) // 2])
            abort_connection(request)
            return
        if fault is not None and fault.sse == "split":
            # Two writes per event, cut inside a multi-byte character when there is one.
            cut = _split_point(frame)
            await response.write(frame[:cut])
            await asyncio.sleep(0.001)
            await response.write(frame[cut:])
        else:
            await response.write(frame)
        if fault is not None and fault.sse == "garbage" and index == 0:
            await response.write((fault.sse_line + newline).encode())
        if framing == "sse" and event is not DONE_EVENT and index == 0:
            await response.write(b": keep-alive" + newline.encode())
    await response.write_eof()
