"""The sealer's side (the gateway for a person's message, the planner for a model's call):
each value sealed to the executor, put on its own subject, and a reference in its place.

Per-cluster mode (INTERLOCK_CLUSTERS set, issue 21): each value is sealed to the executor of
the cluster the call will run on — resolved as the gate resolves it (cluster_names.resolve) —
so only that cluster's spoke can open it; a blob sealed for another cluster fails to open at
the executor (refused, recorded, nothing runs). Legacy mode: the one executor's key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from schemas import subjects as S
from schemas.session import SessionStarted
from services.runtime import cluster_names, identity
from services.runtime.bus import Bus
from services.runtime.errors import ConcurrencyConflict, EventTooLarge, RetryableError
from services.runtime.sealing import commands
from services.runtime.sealing.blobs import Ref, SealingUnavailable, seal, subject
from services.runtime.sealing.slots import b64_ref, copy, is_secret, slots

Put = Callable[[str, bytes], Awaitable[None]]
SessionDefault = Callable[[str], Awaitable[str]]
_DEFAULTS_KEPT = 4096  # sessions whose default cluster a long-lived sealer remembers


class Sealer:
    """Seals values for one service: puts each blob on its own subject, returns references.

    recipient: the legacy executor's key (clusters empty). clusters (INTERLOCK_CLUSTERS):
    per-cluster mode — `sealing` maps `identity.sealing_name(c)` to cluster c's executor key,
    and `session_default` reads a session's default cluster."""

    def __init__(self, name: str, recipient: X25519PublicKey | None, put: Put, *,
                 clusters: tuple[str, ...] = (),
                 sealing: Mapping[str, X25519PublicKey] | None = None,
                 session_default: SessionDefault | None = None) -> None:
        assert name in S.SEALERS, name
        self.name = name
        self.recipient = recipient
        self.put = put
        self.clusters = clusters
        self.sealing = dict(sealing or {})
        self.session_default = session_default
        self._defaults: dict[str, str] = {}

    async def cluster_of(self, session_id: str, named: object = None) -> str:
        """The cluster a call naming `named` (or nothing) runs on, as the gate resolves it;
        "" in legacy mode."""
        if not self.clusters:
            return ""
        default = ""
        if not (isinstance(named, str) and named) and self.session_default is not None:
            if session_id not in self._defaults:  # a session's default never changes
                if len(self._defaults) >= _DEFAULTS_KEPT:
                    self._defaults.clear()
                self._defaults[session_id] = await self.session_default(session_id)
            default = self._defaults[session_id]
        return cluster_names.resolve(named, default, self.clusters)

    def recipient_for(self, cluster: str) -> X25519PublicKey:
        """The sealing key of the executor that will run a call on `cluster`."""
        if not self.clusters:
            key = self.recipient
        else:
            if (why := cluster_names.not_allowed(cluster, self.clusters)) is not None:
                raise SealingUnavailable(f"{why}: its secret values were not sealed, and "
                                         "nothing was recorded")
            key = self.sealing.get(identity.sealing_name(cluster)) if cluster else None
        if key is None:
            where = f" of cluster {cluster!r}" if self.clusters else ""
            raise SealingUnavailable(f"no executor sealing key{where} in the keyring: "
                                     "provision again (interlock up does) so that secrets can "
                                     "be kept out of the log")
        return key

    async def value(self, session_id: str, value: str, named: object = None) -> Ref:
        """One value sealed for a call naming cluster `named` (None: the call names none)."""
        recipient = self.recipient_for(await self.cluster_of(session_id, named))
        ref, blob = seal(value, recipient, self.name, session_id)
        await self.put(subject(self.name, session_id, ref.blob_id), blob)
        return ref

    async def args(self, session_id: str, tool: str, args: dict[str, Any],
                   named: object = None) -> tuple[dict[str, Any], dict[str, Ref]]:
        """The args with every secret value replaced by a reference, and each value sealed
        (value -> its reference: what the caller's text must not repeat), to the executor of
        the cluster the call names (`args.cluster`, else `named`) or would run on."""
        out = copy(args)
        plain: dict[str, Ref] = {}
        named = args.get("cluster") or named
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
                ref = await self.value(session_id, value, named)
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


def sealer_for(bus: Bus, clusters: tuple[str, ...] | None = None) -> Sealer:
    """The sealer of the service a bus belongs to (the gateway or the planner). clusters:
    INTERLOCK_CLUSTERS (read from the environment when not given)."""
    sealing = bus.keyring.sealing if bus.keyring else {}
    recipient = sealing.get(identity.SEALING_RECIPIENT)

    async def session_default(session_id: str) -> str:
        try:
            events = await bus.session(session_id)
        except (RetryableError, TimeoutError) as exc:
            raise SealingUnavailable(f"the session's default cluster could not be read "
                                     f"({exc}), so its secret values could not be sealed; "
                                     "nothing was recorded") from exc
        for stored in events:
            if isinstance(stored.event, SessionStarted):
                return stored.event.cluster_name
        return ""

    async def put(subj: str, blob: bytes) -> None:
        try:
            await bus.put_once(subj, blob)
        except (RetryableError, ConcurrencyConflict, EventTooLarge) as exc:
            raise SealingUnavailable(f"a secret value could not be sealed ({exc}); nothing "
                                     "was recorded") from exc

    return Sealer(bus.service, recipient, put,
                  clusters=cluster_names.allowed() if clusters is None else clusters,
                  sealing=sealing, session_default=session_default)

