"""Reading a request: its JSON body as a msgspec type, a path token checked as an id."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from aiohttp import web

from schemas.ids import InvalidId, check_token
from services.gateway.errors import HttpError
from services.gateway.middleware import MAX_BODY

T = TypeVar("T")


async def body_of(request: web.Request, kind: type[T], *, required: bool = False) -> T:
    if request.content_length and request.content_length > MAX_BODY:
        raise HttpError(413, "too_large", f"body over {MAX_BODY} bytes")
    raw = await request.read()
    if not raw.strip():
        if required:
            raise HttpError(400, "invalid_body", "a JSON body is required")
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise HttpError(400, "invalid_body", str(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise HttpError(400, "malformed_json", f"malformed JSON: {exc}") from exc


def path_token(request: web.Request, name: str, what: str) -> str:
    try:
        return check_token(request.match_info[name], what)
    except InvalidId as exc:
        raise HttpError(400, "invalid_id", str(exc)) from exc
