"""What the log holds: an event as stored, and the link the next event of its session chains
to."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from schemas import chain
from schemas import events as E
from schemas import subjects as S
from schemas.events import AnyEvent
from services.runtime.errors import PoisonMessage

Link = tuple[int, str]  # a stored event's sequence and hash (see schemas.chain)


@dataclass(frozen=True)
class Stored:
    """An event as stored: its stream sequence and subject."""

    seq: int
    subject: str
    event: AnyEvent
    raw: bytes
    # The Interlock-Signature header it was stored with (None: unsigned).
    signature: str | None = None

    @property
    def link(self) -> Link:
        """What an event appended right after this one chains to (see Expect.after)."""
        return self.seq, chain.event_hash(self.raw)



def decode_stored(subject: str, data: bytes) -> AnyEvent:
    """Decodes an event and checks that its subject is the one it belongs on — but not who wrote
    it: what a service acts on goes through Bus.decode, which also checks the signature.

    Raises PoisonMessage for anything undecodable or misrouted.
    """
    try:
        event = E.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PoisonMessage(str(exc)) from exc
    try:
        S.check_subject(subject, event)
    except S.ClusterMismatch as exc:
        raise Misrouted(str(exc), event) from exc
    except S.SubjectMismatch as exc:
        # Another session's, emitter's or key's: nothing it says can be trusted, not even the
        # session to record a refusal in.
        raise PoisonMessage(str(exc)) from exc
    return event


class Misrouted(PoisonMessage):
    """An event stored on its own subject but for another cluster's token (a grant for
    cluster a re-published on b's subject). Never acted upon; `event` is
    what it says, unverified, so that a service can record that it refused it (issue 21: the
    executor of b records command.refused for the calls it names)."""

    def __init__(self, message: str, event: AnyEvent) -> None:
        super().__init__(message)
        self.event = event
