"""Bearer tokens → principals with roles. Tokens are compared by their hash, never logged."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.runtime.errors import ConfigError

Role = Literal["viewer", "operator", "approver", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "approver", "admin")


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    # A readable name to show beside `name` (an OIDC token's `name` claim); never recorded as
    # who acted: events carry `name`.
    display: str = ""
    via: str = "token"  # what proved it: a static token, or an ID token ("oidc")

    def has(self, role: Role) -> bool:
        # admin holds every role; operator and approver can also view.
        if "admin" in self.roles or role in self.roles:
            return True
        return role == "viewer" and bool(self.roles & {"operator", "approver"})


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self) -> None:
        self._by_digest: dict[str, Principal] = {}

    def add(self, token: str, principal: Principal) -> None:
        if len(token) < 16:
            raise ConfigError(f"the token of {principal.name} is too short (16+ characters)")
        unknown = principal.roles - set(ROLES)
        if unknown:
            raise ConfigError(f"unknown roles for {principal.name}: {sorted(unknown)}")
        self._by_digest[_digest(token)] = principal

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, token: str) -> Principal | None:
        return self._by_digest.get(_digest(token))

    @classmethod
    def load(cls, path: Path | None, admin_token: str = "") -> TokenStore:
        store = cls()
        if path is not None:
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read tokens file {path}: {exc}") from exc
            for entry in doc.get("tokens", []):
                store.add(entry["token"],
                          Principal(entry["principal"], frozenset(entry.get("roles", []))))
        if admin_token:
            store.add(admin_token, Principal("admin", frozenset({"admin"})))
        return store
