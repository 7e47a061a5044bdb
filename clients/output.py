"""Where the client commands write, and their usage errors (clients/commands.py)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from clients import render, safe_text
from clients.http import Event


class UsageError(Exception):
    """What was asked cannot be done here (a file that cannot be written): exit code 2. The
    clients' own, so that a client needs nothing of the services' runtime."""


class Out:
    """Where every command writes. Whatever a command built, it is written through
    clients.safe_text: no raw control character from a model, a cluster or the log reaches the
    terminal (render has already put each value on its line; this is the last line of defence)."""

    def __init__(self, stream: TextIO | None = None, as_json: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.as_json = as_json

    def line(self, text: str = "") -> None:
        self.stream.write(safe_text.block(text) + "\n")
        self.stream.flush()

    def prompt(self, text: str) -> None:
        self.stream.write(safe_text.block(text))
        self.stream.flush()

    def data(self, obj: Any) -> None:
        self.stream.write(safe_text.json_line(obj) + "\n")
        self.stream.flush()

    def event(self, ev: Event) -> None:
        if self.as_json:
            self.data({"id": ev.id, "type": ev.type, "data": ev.data})
            return
        text = render.event(ev.id, ev.type, ev.data)
        if text is not None:
            self.line(text)
