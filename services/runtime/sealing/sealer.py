"""The sealer's side (the gateway for a person's message, the planner for a model's call):
each value sealed to the executor, put on its own subject, and a reference in its place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from schemas import subjects as S
from services.runtime import identity
from services.runtime.bus import Bus
from services.runtime.errors import ConcurrencyConflict, EventTooLarge, RetryableError
from services.runtime.sealing import commands
from services.runtime.sealing.blobs import Ref, SealingUnavailable, seal, subject
from services.runtime.sealing.slots import b64_ref, copy, is_secret, slots

Put = Callable[[str, bytes], Awaitable[None]]


class Sealer:
    """Seals values for one service: puts each blob on its own subject, returns references."""

    def __init__(self, name: str, recipient: X25519PublicKey | None, put: Put) -> None:
        assert name in S.SEALERS, name
        self.name = name
        self.recipient = recipient
        self.put = put

    async def value(self, session_id: str, value: str) -> Ref:
        if self.recipient is None:
            raise SealingUnavailable("no executor sealing key in the keyring: provision again "
                                     "(interlock up does) so that secrets can be kept out of "
                                     "the log")
        ref, blob = seal(value, self.recipient, self.name, session_id)
        await self.put(subject(self.name, session_id, ref.blob_id), blob)
        return ref

    async def args(self, session_id: str, tool: str, args: dict[str, Any]
                   ) -> tuple[dict[str, Any], dict[str, Ref]]:
        """The args with every secret value replaced by a reference, and each value sealed
        (value -> its reference: what the caller's text must not repeat)."""
        out = copy(args)
        plain: dict[str, Ref] = {}
        for slot in list(slots(tool, out)):
            value = slot.value
            if not isinstance(value, str) or not value or Ref.parse(value) is not None:
                continue
            manifest = out.get("manifest") if tool in ("apply", "create") else None
            if (b64 := b64_ref(value)) and isinstance(manifest, dict) \
                    and slot.holder is manifest.get("data"):
                # Already sealed, wrapped in base64 by `create secret generic`: as stringData
                # the API server stores exactly what kubectl would have put in data.
                del slot.holder[slot.key]
                manifest.setdefault("stringData", {})[slot.key] = b64.text
                continue
            if slot.always or is_secret(slot.name, value):
                ref = await self.value(session_id, value)
                slot.holder[slot.key] = ref.text
                plain[value] = ref
        if tool in ("apply", "create") and isinstance(out.get("manifest"), dict) \
                and out["manifest"].get("data") == {}:
            del out["manifest"]["data"]
        return out, plain

    async def text(self, session_id: str, text: str) -> str:
        """A person's message with the secret values of its kubectl commands sealed (commands.py);
        anything that is not a command as it is."""
        return await commands.seal_text(self, session_id, text)


def sealer_for(bus: Bus) -> Sealer:
    """The sealer of the service a bus belongs to (the gateway or the planner)."""
    recipient = bus.keyring.sealing.get(identity.SEALING_RECIPIENT) if bus.keyring else None

    async def put(subj: str, blob: bytes) -> None:
        try:
            await bus.put_once(subj, blob)
        except (RetryableError, ConcurrencyConflict, EventTooLarge) as exc:
            raise SealingUnavailable(f"a secret value could not be sealed ({exc}); nothing "
                                     "was recorded") from exc

    return Sealer(bus.service, recipient, put)

