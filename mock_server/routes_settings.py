"""Account-scoped catalog routes (docs/PROTOCOL.md §3): settings lists, model styles,
session templates, and text-normalization configs with their CSV served like a blob.
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from mock_server.context import Handler, MockContext
from mock_server.errors import not_found

CSV_BLOB_PATH = "/_mock/blob/text-normalization/{config_id}/rules.csv"


def list_handler(kind: str) -> Handler:
    async def handle(request: web.Request, ctx: MockContext) -> web.StreamResponse:
        return web.json_response(list(getattr(ctx.catalog, kind)))

    return handle


async def model_styles(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    return web.json_response(ctx.catalog.model_styles_for(request.query.get("platform_type")))


async def text_normalization_download(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    config_id = request.match_info["config_id"]
    config = ctx.catalog.find("text_normalizations", config_id)
    if config is None or config_id not in ctx.catalog.text_normalization_files:
        return not_found()
    path = CSV_BLOB_PATH.format(config_id=config_id)
    # Shaped like a pre-signed blob URL (query signature), served by the mock itself.
    file_url = f"{request_origin(request)}{path}?sv=2024-08-04&se=2099-01-01T00%3A00%3A00Z&sig=mock"
    return web.json_response(
        {"config_id": config_id, "config_name": config.get("name", ""), "file_url": file_url}
    )


def csv_etag(text: str) -> str:
    return '"0x' + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16].upper() + '"'


async def text_normalization_file(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    text = ctx.catalog.text_normalization_files.get(request.match_info["config_id"])
    if text is None:
        # Blob storage answers XML; a client must not need to parse it.
        return web.Response(
            status=404,
            text='<?xml version="1.0"?><Error><Code>BlobNotFound</Code></Error>',
            content_type="application/xml",
        )
    etag = csv_etag(text)
    headers = {"ETag": etag, "Cache-Control": "private, max-age=0"}
    if_none_match = request.headers.get("If-None-Match", "")
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    if etag in tags or "*" in tags:
        return web.Response(status=304, headers=headers)
    return web.Response(body=text.encode("utf-8"), headers=headers, content_type="text/csv")


async def session_templates(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    return web.json_response(
        [ctx.catalog.expand_template(t) for t in ctx.catalog.session_templates]
    )


async def session_template(request: web.Request, ctx: MockContext) -> web.StreamResponse:
    found = ctx.catalog.find("session_templates", request.match_info["template_id"])
    if found is None:
        return not_found()
    return web.json_response(ctx.catalog.expand_template(found))


def request_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"
