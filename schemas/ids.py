"""Identifiers that end up inside NATS subjects, so they are validated here, once."""

from __future__ import annotations

import hashlib
import re
import secrets

# No '.', '*', '>' or whitespace can ever reach a subject token.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class InvalidId(ValueError):
    """An id that could not be used safely as a subject token."""


def check_token(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise InvalidId(f"invalid {what}: must be 1-64 characters of [A-Za-z0-9_-]")
    return value


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def derived_id(prefix: str, *parts: str) -> str:
    """An id derived from what caused it (`prefix_` + sha256 of the parts joined by ':'), so a
    redelivered cause yields the same id and the log refuses a second copy."""
    return f"{prefix}_{hashlib.sha256(':'.join(parts).encode()).hexdigest()[:20]}"


def new_session_id() -> str:
    return new_id("s")


def new_call_id() -> str:
    return new_id("c")


def new_approval_id() -> str:
    return new_id("a")


def new_event_id() -> str:
    return new_id("e")
