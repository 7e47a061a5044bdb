"""How the API answers: JSON bodies (with the Warning headers kubectl prints), errors as a
Status, and whether a client asked for a Table."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from sandbox.state.errors import (
    ApiError,
)

JSON_CT = "application/json"


def json_response(
    body: Any, status: int = 200, content_type: str = JSON_CT, warnings: list[str] | None = None
) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict()
    if ";" in content_type:
        headers["Content-Type"] = content_type
    for text in warnings or []:
        # RFC 7234 warn-code 299, as apiserver sends them; kubectl prints "Warning: <text>".
        headers.add("Warning", f"299 - {json.dumps(text)}")
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        content_type=None if ";" in content_type else content_type,
        headers=headers,
    )


def error_response(err: ApiError) -> web.Response:
    return json_response(err.status(), err.code)


def wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")
