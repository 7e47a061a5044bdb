"""Secret values in proposed writes: in the log as a keyed fingerprint, to the executor sealed.

A Secret's data, a credential in an env var or a ConfigMap value is needed by exactly one party,
the executor, and must never be stored in the log (which every service, the audit, SSE viewers
and the model read). So whichever service first holds such a value — the gateway for a person's
message, the planner for a model's tool call — replaces it with a reference

    sealed:<sealer>:<blob id>:<fingerprint>

and stores the value, sealed, OUTSIDE the log: on `sealed.<sealer>.<session>.<blob id>` in the
SEALED stream (docs/architecture.md, "Secret values in writes"). The pieces:

- **Sealing**: HPKE (RFC 9180, base mode; DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
  ChaCha20-Poly1305) from `cryptography`, to the executor's X25519 public key (the keyring's
  `sealing` entry, identity.sealing_key). The HPKE `info` binds the blob to its sealer, session
  and blob id, so a blob copied under another reference or into another session does not open.
- **Fingerprint**: HMAC-SHA256 of the value under a fresh random 32-byte key that travels only
  inside the sealed blob. A plain hash of a low-entropy password could be brute-forced from the
  log; this cannot without the key. The executor recomputes it after opening the blob and
  refuses the write unless it equals the one in the approved (hashed, granted) args: a blob
  swapped by anyone but its sealer, who would have to find another (key, value) with the same
  256-bit HMAC, is refused.
- **Who may do what** (services/runtime/natsconf.py): the gateway may only put on
  `sealed.gateway.>`, the planner on `sealed.planner.>`, the executor may only read (Direct
  Get); a subject holds one blob for good (discard-new per subject), and blobs expire
  (`INTERLOCK_SEALED_MAX_AGE_S`). A missing or expired blob fails the preview or the write with
  a recorded reason; nothing runs with another value.

Where values are sealed (`candidates`): every value of a Secret's `data`/`stringData`; env
entries (set_env, and `env` lists anywhere in a manifest or patch) and ConfigMap data whose name
says credential or whose value carries one by its shape. The same positions are the only ones
where the executor resolves a reference.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import shlex
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from schemas import subjects as S
from services.runtime import identity
from services.runtime.bus import Bus
from services.runtime.credentials import REDACTED, contains_credential, is_secret_name
from services.runtime.errors import (
    ConcurrencyConflict,
    ConfigError,
    EventTooLarge,
    InterlockError,
    RetryableError,
)

REF = re.compile(r"sealed:(gateway|planner):([0-9a-f]{32}):([0-9a-f]{64})")
SHOWN_DIGITS = 12
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_INFO = b"interlock.sealed.v1\x00"
_FP = b"interlock.fingerprint.v1\x00"
# Names that say "credential" beyond credentials.is_secret_name: the issue's *PASS*, *TOKEN*,
# *KEY*, *SECRET* (DB_PASS, STRIPE_KEY).
_SECRET_NAME = re.compile(r"(?i)(pass|pwd|token|secret|key|credential)")
# A URL with a password in its userinfo: postgres://app:pw@db/app.
_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@")

T = TypeVar("T")


class SealError(InterlockError):
    """A reference that cannot be resolved to the value it was approved with."""


class SealingUnavailable(RetryableError):
    """No executor key to seal to, or the SEALED stream cannot be written: nothing is stored."""


class Unsealable(ValueError):
    """Input that may hold a secret the sealer cannot find exactly (an unreadable manifest)."""


# -- references and fingerprints -----------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    sealer: str
    blob_id: str
    fingerprint: str

    @property
    def text(self) -> str:
        return f"sealed:{self.sealer}:{self.blob_id}:{self.fingerprint}"

    @property
    def shown(self) -> str:
        """What a card says in place of the value: that a value is set, and which one."""
        return f"<sealed value, fingerprint {self.fingerprint[:SHOWN_DIGITS]}…>"

    @classmethod
    def parse(cls, text: Any) -> Ref | None:
        m = REF.fullmatch(text) if isinstance(text, str) else None
        return cls(m.group(1), m.group(2), m.group(3)) if m else None


def show_refs(text: str) -> str:
    """Text with every reference written as a card shows it (the fingerprint's first digits)."""
    return REF.sub(lambda m: Ref(m.group(1), m.group(2), m.group(3)).shown, text)


def fingerprint(key: bytes, value: str) -> str:
    return hmac.new(key, _FP + value.encode(), hashlib.sha256).hexdigest()


def subject(sealer: str, session_id: str, blob_id: str) -> str:
    return S.sealed_subject(sealer, session_id, blob_id)


def _info(sealer: str, session_id: str, blob_id: str) -> bytes:
    return _INFO + f"{sealer}\x00{session_id}\x00{blob_id}".encode()


def seal(value: str, recipient: X25519PublicKey, sealer: str, session_id: str) -> tuple[Ref, bytes]:
    """The reference that stands for `value` in the log, and the blob only the executor opens."""
    key = secrets.token_bytes(32)
    blob_id = secrets.token_hex(16)
    plain = json.dumps({"v": 1, "value": value, "key": base64.b64encode(key).decode()}).encode()
    blob = _SUITE.encrypt(plain, recipient, info=_info(sealer, session_id, blob_id))
    return Ref(sealer, blob_id, fingerprint(key, value)), blob


def open_blob(ref: Ref, blob: bytes, private: X25519PrivateKey, session_id: str) -> str:
    """The value a blob holds, if it is this reference's blob, in this session, and its value
    has the approved fingerprint; else SealError."""
    try:
        plain = _SUITE.decrypt(blob, private, info=_info(ref.sealer, session_id, ref.blob_id))
        doc = json.loads(plain)
        key = base64.b64decode(doc["key"], validate=True)
        value = doc["value"]
    except (InvalidTag, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SealError(f"the sealed value {ref.fingerprint[:SHOWN_DIGITS]} does not open with "
                        "the executor's key for this session and reference") from exc
    if not isinstance(value, str) or not hmac.compare_digest(fingerprint(key, value),
                                                             ref.fingerprint):
        raise SealError(f"the sealed value does not match the approved fingerprint "
                        f"{ref.fingerprint[:SHOWN_DIGITS]}: it was replaced after approval")
    return value


# -- where secret values sit in a tool's args ----------------------------------------------------


def is_secret(name: str, value: str) -> bool:
    """An env var or ConfigMap entry whose name or value says it is a credential."""
    return bool(is_secret_name(name) or _SECRET_NAME.search(name) or contains_credential(value)
                or _USERINFO.search(value))


@dataclass
class Slot:
    """One string in the args where a secret value may sit: holder[key]."""

    holder: dict[str, Any]
    key: str
    name: str  # the env var or data key the value belongs to
    always: bool  # a Secret's data: sealed whatever it looks like
    where: str  # "data:<key>" or "env:<name>": how the preview diff addresses it

    @property
    def value(self) -> Any:
        return self.holder[self.key]


def _doc_slots(kind: str, doc: Any) -> Iterator[Slot]:
    if not isinstance(doc, dict):
        return
    kind = kind.lower()
    if kind == "secret":
        for f in ("data", "stringData"):
            data = doc.get(f)
            if isinstance(data, dict):
                for k in data:
                    yield Slot(data, k, k, True, f"data:{k}")
    if kind == "configmap" and isinstance(doc.get("data"), dict):
        for k in doc["data"]:
            yield Slot(doc["data"], k, k, False, f"data:{k}")
    yield from _env_slots(doc)


def _env_slots(node: Any) -> Iterator[Slot]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "env" and isinstance(v, list):
                for e in v:
                    if isinstance(e, dict) and isinstance(e.get("name"), str) and "value" in e:
                        yield Slot(e, "value", e["name"], False, f"env:{e['name']}")
            elif k not in ("data", "stringData"):
                yield from _env_slots(v)
    elif isinstance(node, list):
        for v in node:
            yield from _env_slots(v)


def slots(tool: str, args: dict[str, Any]) -> Iterator[Slot]:
    """Every position in a call's args (a JSON dict, changed in place by the caller) where a
    secret value may sit."""
    if tool == "set_env" and isinstance(args.get("env"), dict):
        for name in args["env"]:
            yield Slot(args["env"], name, name, False, f"env:{name}")
    elif tool in ("apply", "create") and isinstance(args.get("manifest"), dict):
        yield from _doc_slots(str(args["manifest"].get("kind", "")), args["manifest"])
    elif tool == "patch":
        yield from _doc_slots(str(args.get("kind", "")), args.get("body"))


def _b64_ref(value: Any) -> Ref | None:
    """A Secret `data` value that is a reference, base64-encoded (kubectl's create secret
    generic encodes every literal, and a sealed literal is a reference)."""
    if not isinstance(value, str) or not value.startswith("c2VhbGVk"):  # "sealed"
        return None
    try:
        return Ref.parse(base64.b64decode(value, validate=True).decode())
    except (ValueError, binascii.Error):
        return None


def _copy(obj: T) -> T:
    out: T = json.loads(json.dumps(obj))
    return out


# -- the sealer's side (gateway, planner) -------------------------------------------------------

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
        out = _copy(args)
        plain: dict[str, Ref] = {}
        for slot in list(slots(tool, out)):
            value = slot.value
            if not isinstance(value, str) or not value or Ref.parse(value) is not None:
                continue
            manifest = out.get("manifest") if tool in ("apply", "create") else None
            if (b64 := _b64_ref(value)) and isinstance(manifest, dict) \
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
        """A person's message with the secret values of its kubectl commands sealed (direct
        mode parses the message the log stores). Anything that is not a command is returned
        as it is."""
        t = _implied(text.strip())
        if not _is_command(t):
            return text
        lines = [line for line in t.split("\n") if line.strip()]
        if len(lines) > 1 and _MANIFEST_HEAD.match(lines[0].strip()):
            out_text = await self._manifest_text(session_id, t)
        elif len(lines) > 1 and not all(_is_command(line.strip()) for line in lines):
            return text  # the planner refuses such a message whole, so nothing is proposed
        else:
            out_text = "\n".join([await self._line(session_id, line.strip()) for line in lines])
        if out_text == t or out_text == "\n".join(line.strip() for line in lines):
            return text
        # Recorded as the person wrote it, the word kubectl left out again: whether a model or
        # direct mode reads the message must not depend on whether it held a secret.
        return out_text if t.startswith(("kubectl", "/kubectl")) == text.strip().startswith(
            ("kubectl", "/kubectl")) else _unimplied(out_text)

    async def _line(self, session_id: str, line: str) -> str:
        try:
            words = shlex.split(line)
        except ValueError:
            return line
        # Flags may come anywhere (`kubectl -n shop create secret …`): the words that are not
        # flags, flag values included — enough to tell the verb and the kind, and sealing a
        # value too many only hides it from the card.
        plain = [w.lower() for w in words[1:] if not w.startswith("-")]
        verb = next((w for w in plain if w in ("create", "set", "patch")), "")
        after = plain[plain.index(verb) + 1:] if verb else []
        kind = _kind_word(after)
        changed = False
        if verb == "create" and kind in ("secret", "configmap"):
            i = 0
            while i < len(words):
                w, pair, at = words[i], None, i
                if w.startswith("--from-literal="):
                    pair = w.removeprefix("--from-literal=")
                elif w == "--from-literal" and i + 1 < len(words):
                    pair, at = words[i + 1], i + 1
                if pair is not None:
                    k, eq, v = pair.partition("=")
                    if eq and v and Ref.parse(v) is None and (kind == "secret"
                                                              or is_secret(k, v)):
                        ref = await self.value(session_id, v)
                        words[at] = ("--from-literal=" if at == i else "") + f"{k}={ref.text}"
                        changed = True
                i = at + 1
        elif verb == "set" and "env" in after:
            for i, w in enumerate(words):
                # NAME=VALUE, and kubectl's --env=NAME=VALUE / -e NAME=VALUE (which direct
                # mode refuses — after the message is recorded).
                flag = "--env=" if w.startswith("--env=") else ""
                k, eq, v = w.removeprefix(flag).partition("=")
                if i > 0 and (flag or not w.startswith("-")) and eq and v \
                        and Ref.parse(v) is None and is_secret(k, v):
                    words[i] = f"{flag}{k}={(await self.value(session_id, v)).text}"
                    changed = True
        elif verb == "patch":
            changed = await self._patch_words(session_id, words, kind)
        return shlex.join(words) if changed else line

    async def _patch_words(self, session_id: str, words: list[str], kind: str) -> bool:
        for i, w in enumerate(words):
            at, body = None, None
            if w in ("-p", "--patch") and i + 1 < len(words):
                at, body = i + 1, words[i + 1]
            elif w.startswith("--patch="):
                at, body = i, w.removeprefix("--patch=")
            if at is None or body is None:
                continue
            try:
                doc = json.loads(body)
            except ValueError:
                return False
            sealed, plain = await self.args(session_id, "patch", {"kind": kind, "body": doc})
            if plain:
                text = json.dumps(sealed["body"], separators=(",", ":"))
                words[at] = text if at != i else f"--patch={text}"
                return True
        return False

    async def _manifest_text(self, session_id: str, text: str) -> str:
        head, _, body = text.partition("\n")
        m = _MANIFEST_HEAD.match(head.strip())
        assert m is not None
        # Whatever follows, the command line itself may carry a literal (the planner reads
        # `create secret … --from-literal` followed by lines as one command, and refuses it).
        sealed_head = await self._line(session_id, head.strip())
        if sealed_head != head.strip():
            return sealed_head + "\n" + (await self.text(session_id, body) if body.strip()
                                         else body)
        marker = m.group(2)
        lines = body.rstrip().split("\n")
        tail = ""
        if marker and lines and lines[-1].strip() == marker:
            lines, tail = lines[:-1], "\n" + lines[-1].strip()
        try:
            docs = [d for d in yaml.safe_load_all("\n".join(lines)) if d is not None]
        except yaml.YAMLError:
            docs = []
        if len(docs) != 1 or not isinstance(docs[0], dict):
            if _may_hold_secret(body):
                raise Unsealable("the manifest could not be read as one YAML object, and it may "
                                 "hold a secret: it was not recorded; correct it and send it "
                                 "again")
            return text
        try:
            manifest = _copy(docs[0])
        except TypeError as exc:  # dates and such: the planner refuses it too
            if _may_hold_secret(body):
                raise Unsealable("the manifest holds values that are not JSON (quote dates and "
                                 "times), and it may hold a secret: it was not recorded") from exc
            return text
        sealed, plain = await self.args(session_id, m.group(1), {"manifest": manifest})
        if not plain:
            return text
        # JSON is YAML: the planner reads it as it would have read the original.
        return f"{head}\n{json.dumps(sealed['manifest'], indent=2)}{tail}"


def _kind_word(words: list[str]) -> str:
    """"secret" or "configmap" if the words after a verb name one (`secret`, `cm/x`, …)."""
    for w in words:
        base = w.split("/")[0]
        if base in ("secret", "secrets"):
            return "secret"
        if base in ("configmap", "configmaps", "cm"):
            return "configmap"
    return ""


_MANIFEST_HEAD = re.compile(r"^/?kubectl\s+(apply|create)\s+.*?(?:<<-?\s*['\"]?(\w+)['\"]?)?$")


# kubectl's verbs that direct mode takes (services/planner/direct.py); the ones that can carry a
# value are create, set, patch and apply, the others count so that a message of several lines
# is still read as commands.
_BARE = re.compile(r"^(create|set|patch|apply|get|describe|logs|top|events|scale|delete|label|"
                   r"annotate|rollout|cordon|uncordon|drain)\s")
_BARE_MANIFEST = re.compile(r"^(apply|create)\b.*\s(-f|--filename)(\s|=|$)")


def _implied(text: str) -> str:
    """A message whose lines are commands without the word kubectl (`create secret generic …`),
    as the commands direct mode runs (it implies the word): sealed like them, never recorded as
    typed. Anything else is returned as it is."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines or not _BARE.match(lines[0]):
        return text
    if len(lines) > 1 and _BARE_MANIFEST.match(lines[0]):
        return "kubectl " + text
    return "\n".join("kubectl " + line if _BARE.match(line) else line for line in lines)


def _unimplied(text: str) -> str:
    return "\n".join(line.removeprefix("kubectl ") for line in text.split("\n"))


def _is_command(text: str) -> bool:
    return text.startswith(("kubectl ", "/kubectl ", "kubectl\n", "/kubectl\n"))


def _may_hold_secret(text: str) -> bool:
    return bool(re.search(r"(?im)^\s*kind:\s*['\"]?Secret\b", text)) or contains_credential(
        text) or bool(_USERINFO.search(text)) or bool(
        re.search(r"(?im)^\s*-?\s*name:\s*['\"]?\w*(pass|pwd|token|secret|key)", text))


# Shorter values are not replaced in free text: "app" as a Secret's user would mangle every
# "apps/v1" of a result, and a value that short is no credential worth a fingerprint.
MIN_SCRUBBED = 4


def scrub_text(text: str, refs: dict[str, Ref]) -> str:
    """Text with each sealed value (and its base64) replaced by what a card shows for it."""
    for value, ref in sorted(refs.items(), key=lambda kv: -len(kv[0])):
        if len(value) < MIN_SCRUBBED:
            continue
        for form in _forms(value):
            text = text.replace(form, ref.shown)
    return text


def _forms(value: str) -> tuple[str, ...]:
    return (value, base64.b64encode(value.encode()).decode()) if value else ()


# -- the executor's side -------------------------------------------------------------------------

Get = Callable[[str], Awaitable[bytes | None]]


@dataclass
class Unsealed:
    """A call's args with their references resolved, and what the executor must never echo."""

    args: dict[str, Any]
    values: dict[str, Ref] = field(default_factory=dict)  # real value -> its reference
    where: dict[str, Ref] = field(default_factory=dict)  # "data:<key>" / "env:<name>" -> ref

    def scrub(self, event: T) -> T:
        """An event (or any JSON-like value) about this call as it may be recorded: every
        resolved value replaced by what the card shows for it, and in every field change
        (diffs, a result's changes, a verification's `differs`) at a place where a secret sits
        — one sealed in this call, or an env/ConfigMap value that is a credential by name or
        shape (another write's secret observed there, the old value) — the value masked,
        wherever else the event repeats it too."""
        raw = msgspec.to_builtins(event) if isinstance(event, msgspec.Struct) else event
        masked: dict[str, str] = {}
        self._mask_changes(raw, masked)
        if not self.values and not masked:
            return event
        walked = self._walk(raw, masked)
        if isinstance(event, msgspec.Struct):
            out: T = msgspec.convert(walked, type(event), strict=False)
            return out
        result: T = walked
        return result

    def _mask_changes(self, node: Any, masked: dict[str, str]) -> None:
        """Finds the field changes in an event and what each must show instead of a value."""
        if isinstance(node, list | tuple):  # to_builtins keeps a Struct's tuples
            for v in node:
                self._mask_changes(v, masked)
            return
        if not isinstance(node, dict):
            return
        path = node.get("path")
        if isinstance(path, str):
            ref = self._at(path)
            real = {r: v for v, r in self.values.items()}.get(ref) if ref else None
            for f in ("before", "after", "approved", "observed"):
                value = node.get(f)
                if not isinstance(value, str) or not value or value in (REDACTED,):
                    continue
                if ref is not None:
                    masked[value] = ref.shown if value == real else REDACTED
                elif _credential_at(path, value):
                    masked[value] = REDACTED
        for v in node.values():
            self._mask_changes(v, masked)

    def _walk(self, node: Any, masked: dict[str, str]) -> Any:
        if isinstance(node, str):
            if node in masked:
                return masked[node]
            return _replace(scrub_text(node, self.values), masked)
        if isinstance(node, list | tuple):
            return [self._walk(v, masked) for v in node]
        if isinstance(node, dict):
            out = {k: self._walk(v, masked) for k, v in node.items()}
            if isinstance(out.get("path"), str) and out.get("after") is not None:
                ref = self._at(out["path"])
                if ref is not None:  # a Secret's value the diff already masked, say
                    out["after"] = ref.shown
            return out
        return node

    def _at(self, path: str) -> Ref | None:
        """The sealed value a diff path sets, if any (Secret data, env value, ConfigMap)."""
        m = _ENV_PATH.search(path)
        if m:
            return self.where.get(f"env:{m.group(1)}")
        m = _DATA_PATH.fullmatch(path)
        return self.where.get(f"data:{m.group(1)}") if m else None


_ENV_PATH = re.compile(r"\.env\[name=([^\]]+)\]\.value$")
_DATA_PATH = re.compile(r"(?:data|stringData)\.(.+)")


def _credential_at(path: str, value: str) -> bool:
    """A value of an env var or a data key that is a credential by its name or shape."""
    m = _ENV_PATH.search(path) or _DATA_PATH.fullmatch(path)
    return bool(m) and is_secret(m.group(1) if m else "", value)


def _replace(text: str, masked: dict[str, str]) -> str:
    for value in sorted(masked, key=len, reverse=True):
        if len(value) >= MIN_SCRUBBED:
            for form in _forms(value):
                text = text.replace(form, masked[value])
    return text


class Opener:
    """The executor's side: fetches blobs of its own session and opens them."""

    def __init__(self, private: X25519PrivateKey, get: Get) -> None:
        self.private = private
        self.get = get

    async def args(self, session_id: str, tool: str, args: dict[str, Any]) -> Unsealed:
        out = _copy(args)
        result = Unsealed(out)
        for slot in list(slots(tool, out)):
            ref = Ref.parse(slot.value)
            if ref is None:
                continue
            blob = await self.get(subject(ref.sealer, session_id, ref.blob_id))
            if blob is None:
                raise SealError(f"the sealed value {ref.fingerprint[:SHOWN_DIGITS]} of "
                                f"{slot.name} is not available (expired, or never stored for "
                                "this session); nothing was run — propose the write again")
            value = open_blob(ref, blob, self.private, session_id)
            slot.holder[slot.key] = value
            result.values[value] = ref
            result.where[slot.where] = ref
        return result


# -- wiring to the bus ---------------------------------------------------------------------------


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


def opener_for(bus: Bus) -> Opener:
    """The executor's opener: its sealing key is derived from its own signing key."""
    if bus.signer is None:
        raise ConfigError(f"{bus.service}: no signing key, so no sealing key to open secrets")

    async def get(subj: str) -> bytes | None:
        try:
            return await bus.last_in(S.SEALED_STREAM, subj)
        except TimeoutError as exc:
            raise RetryableError(f"reading a sealed value timed out: {exc}") from exc

    return Opener(identity.sealing_key(bus.signer.key), get)
