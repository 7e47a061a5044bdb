"""Commands on the EXEC work queue. Only the gate may publish them (NATS permissions), and a
write additionally carries the gate's signature, which the executor verifies."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from schemas.approval import Grant
from schemas.base import Target


class ExecCommand(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["read", "write", "preview"]
    session_id: str
    call_id: str
    tool: str
    args: dict[str, Any]
    target: Target = msgspec.field(default_factory=Target)
    grant: Grant | None = None
    causation_id: str = ""
    # The session's event the gate recorded just before publishing this command (its sequence
    # and hash): what the executor's answer most likely follows (see Bus.append's `after_hint`).
    # A hint only, checked by the server; never a reason to run anything.
    after_seq: int = 0
    after_hash: str = ""


command_decoder = msgspec.json.Decoder(ExecCommand)
command_encoder = msgspec.json.Encoder()
