"""The gateway's HTTP error: a status, a stable code and a message naming the problem."""

from __future__ import annotations


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers
