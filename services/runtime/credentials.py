"""What a credential looks like: names and values. Pure functions, shared by every service that
must keep a secret out of the log (the executor's reads, the planner's and gateway's writes).

Two questions, answered cheaply because every string of every read passes through here:
- a NAME that says its value is a credential (`DB_PASS`, `spring.datasource.password`,
  `AccountKey`), judged word by word so that `TOKEN_TTL_SECONDS`, `secretKeyRef` or
  `password_min_length` are settings, not secrets;
- a VALUE that is a credential by its shape, whatever its name: vendor token formats, private
  keys, JWTs, authorization headers, URLs with a password, `key=value` pairs with a secret key.

Deliberately over-redacted (a reader loses little, a leak costs a lot): any value under a
secret-looking name, even `changeme`; names with KEY after another word (`CACHE_KEY`, but not
`public_key`/`sort_key`); long hex/alphanumeric userinfo in a URL (a Sentry DSN's key); AWS access
key ids. Kept: empty values and placeholders (`${DB_PASSWORD}`), booleans, small numbers,
public certificates (also base64-encoded), user names in URLs (`git@`, `billing:<redacted>@`).
Not attempted: a secret with no recognisable shape under a neutral name (`notes: hunter2`)."""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable

REDACTED = "<redacted>"
# Kept for callers that match a single name fragment; `is_secret_name` is the full judgement.
SENSITIVE = re.compile(r"(password|passwd|secret|token|api[-_]?key|credential|private[-_]?key)",
                       re.IGNORECASE)

# -- names ----------------------------------------------------------------------------------------

_SECRET_WORDS = frozenset({
    "password", "passwd", "pass", "passphrase", "pwd", "pw", "secret", "secrets", "token",
    "tokens", "credential", "credentials", "creds", "apikey", "privatekey", "secretkey",
    "accesskey", "authtoken", "authorization", "sessionkey", "masterkey", "accountkey",
})
# A word that ends so is a secret too: dbpassword, clientsecret, xsrftoken.
_SECRET_ENDINGS = ("password", "passwd", "secret", "token", "apikey", "privatekey")
# Secret only as the last word: `auth` (a docker config's base64 user:password), a signature.
_SECRET_LAST = frozenset({"auth", "sig", "signature"})
# KEY after one of these is not a credential.
_KEY_SAFE = frozenset({
    "public", "pub", "sort", "partition", "cache", "primary", "foreign", "routing", "hash",
    "shard", "idempotency", "group", "lookup", "index", "dedup", "label", "object", "map",
    "match", "selector", "row", "unique", "composite", "config", "host", "ssh_host",
})
# A last word that makes the name a setting ABOUT a secret: `token_ttl`, `secretName`,
# `password_min_length`, `TOKEN_PATH`, `secretKeyRef`.
_MODIFIERS = frozenset({
    "ttl", "timeout", "expiry", "expires", "expiration", "exp", "age", "seconds", "secs", "sec",
    "ms", "millis", "minutes", "mins", "hours", "days", "interval", "duration", "lifetime",
    "period", "path", "paths", "file", "files", "filename", "dir", "directory", "name", "names",
    "ref", "refs", "reference", "length", "len", "size", "count", "max", "min", "limit",
    "enabled", "enable", "disabled", "required", "type", "kind", "mode", "header", "prefix",
    "suffix", "url", "uri", "endpoint", "host", "hostname", "port", "format", "algorithm", "alg",
    "version", "policy", "rotation", "field", "location", "source", "provider", "hint", "mount",
    "volume", "issuer", "audience", "scope", "scopes", "strength", "complexity", "attempts",
    "retries", "reset", "pattern", "regex", "id", "ids", "user", "username", "login", "store",
    "manager", "namespace", "generation", "template",
})
# A name whose value is a URL or DSN: its whole userinfo is a credential (a Sentry DSN's key).
_URL_WORDS = frozenset({"url", "uri", "dsn", "endpoint", "connection", "conn", "connstr",
                        "addr", "address", "server", "broker", "brokers", "upstream"})
_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@functools.lru_cache(maxsize=4096)
def _words(name: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _SPLIT.split(name) if w)


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """A key, env or annotation name that says its value is a credential."""
    words = _words(name)
    if not words or words[-1] in _MODIFIERS:
        return False
    if words[-1] in _SECRET_LAST:
        return True
    for i, w in enumerate(words):
        if w in _SECRET_WORDS or w.endswith(_SECRET_ENDINGS):
            return True
        if w in ("key", "keys") and i > 0 and words[i - 1] not in _KEY_SAFE:
            return True
    return False


def is_url_name(name: str) -> bool:
    """`DATABASE_URL`, `SENTRY_DSN`: a value whose userinfo, all of it, is a credential."""
    words = _words(name)
    return bool(words) and words[-1] in _URL_WORDS


_KEEP = re.compile(r"(?i)^(?:|\s+|true|false|yes|no|on|off|null|none|nil|~|\d{1,6}|\*+|"
                   r"\$\{[^}]*\}|\$\([^)]*\)|\{\{.*\}\}|%\([^)]*\)s|<[^<>]*>)$")


def is_placeholder(value: str) -> bool:
    """A value that is not a credential whatever its name: empty, a boolean, a small number,
    a reference to be substituted (`${DB_PASSWORD}`), a mask (`****`, `<redacted>`)."""
    return len(value) <= 48 and bool(_KEEP.match(value.strip().strip("\"'")))


# -- values ---------------------------------------------------------------------------------------

# Vendor token formats, one alternation scanned once. Each names its vendor for the reader.
_TOKENS = re.compile("|".join((
    r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b",  # AWS key id
    r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{10,}",  # Stripe secret / restricted
    r"\bwhsec_[A-Za-z0-9+/=]{20,}",  # Stripe webhook signing secret
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",  # GitHub
    r"\bgithub_pat_[A-Za-z0-9_]{30,}",
    r"\bglpat-[A-Za-z0-9_-]{20,}",  # GitLab
    r"\bxox[abeoprs]-[A-Za-z0-9-]{10,}",  # Slack
    r"\bxapp-\d-[A-Za-z0-9-]{10,}",
    r"\bAIza[0-9A-Za-z_-]{35}",  # Google API key
    r"\bGOCSPX-[A-Za-z0-9_-]{20,}",  # Google OAuth client secret
    r"\bya29\.[A-Za-z0-9_-]{20,}",  # Google OAuth access token
    r"\bsk-(?:proj-|svcacct-|admin-|ant-[a-z]+\d*-)?[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic
    r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{20,}",  # SendGrid
    r"\bnpm_[A-Za-z0-9]{36}\b",  # npm
    r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
    r"\bdop_v1_[a-f0-9]{64}\b",  # DigitalOcean
    r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b",  # Shopify
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
)))
# The cheap test before the scan: a substring every token above starts with (lowercased).
_TOKEN_HINTS = ("akia", "asia", "abia", "acca", "agpa", "aida", "aroa", "aipa", "anpa", "anva",
                "apka", "sk_", "rk_", "whsec_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
                "github_pat_", "glpat-", "xox", "xapp-", "aiza", "gocspx-", "ya29.", "sk-", "sg.",
                "npm_", "hf_", "dop_v1_", "shp", "eyj")
# In a long text, one check of a character most of the hints hold saves checking each of them.
_UNDERSCORED = tuple(h for h in _TOKEN_HINTS if "_" in h)
_OTHER_HINTS = tuple(h for h in _TOKEN_HINTS if "_" not in h and not (
    len(h) == 4 and h.startswith("a") and h != "aiza"))
_AWS = re.compile(r"A[A-Z]{3}[A-Z0-9]{16}")  # all AWS key id prefixes: one cheap scan
_TWILIO = re.compile(r"\bSK[0-9a-fA-F]{32}\b")  # Twilio API key; its hint is case-sensitive

_PEM = re.compile(r"(-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)[\s\S]*?"
                  r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)")
# base64 of "-----BEGIN": a kubeconfig's client-key-data, a key in a Secret manifest's data.
_B64_PEM = re.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/]*={0,2}")
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]{1,20}://)([^\s:/?#@\"'<>]*)"
                       r"(?::([^\s/?#\"'<>]*))?@(?=[\w\[])")
_WEBHOOK = re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/|"
                      r"discord(?:app)?\.com/api/webhooks/\d+/)[A-Za-z0-9_/+-]+")
_AUTH_HEADER = re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?"
                          r"(?:bearer|basic|token|digest|apikey|sso-key)?\s*)([^\s\"',;]+)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})")
_BASIC = re.compile(r"\b(Basic\s+)([A-Za-z0-9+/]{8,}={0,2})")
# key=value, key: value, "key": "value", --key=value; the key is judged by is_secret_name.
_KV = re.compile(r"(?<![\w.])([A-Za-z_][\w.-]*)(\\?[\"']?[ \t]*[:=][ \t]*)"
                 r"(\\\"(?:(?!\\\")[^\n])*\\\"|\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|"
                 r"\$\{[^}\n]*\}|\$\([^)\n]*\)|\{\{[^}\n]*\}\}|"
                 r"[^\s\"',;&<>(){}\[\]\\]+)")
_KV_HINTS = ("pass", "pwd", "pw", "secret", "token", "key", "cred", "auth", "sig")
# a YAML block scalar under a secret key: `password: |` and its indented lines
_BLOCK = re.compile(r"(?m)^([ \t]*)([\w.-]+):[ \t]*[|>][-+]?[ \t]*\n((?:\1[ \t]+\S.*(?:\n|$))+)")


def _pem(m: re.Match[str]) -> str:
    # BEGIN, mask, END: the result is matched whole by a second pass, which leaves it as it is.
    return m.group(1) + REDACTED + m.group(1).replace("BEGIN", "END", 1)


def _b64_pem(m: re.Match[str]) -> str:
    head = m.group(0)[:80]
    try:
        decoded = base64.b64decode(head[: len(head) // 4 * 4], validate=False)
    except (binascii.Error, ValueError):
        return m.group(0)
    return REDACTED if b"PRIVATE KEY" in decoded else m.group(0)


def _userinfo(m: re.Match[str], whole: bool = False) -> str:
    scheme, user, password = m.group(1), m.group(2), m.group(3)
    if password is not None:
        if is_placeholder(password) and password:
            return m.group(0)
        return f"{scheme}{user}:{REDACTED}@"
    # A user alone is a name (git@, ssh://deploy@) unless it looks like a key (a Sentry DSN).
    if whole or (len(user) >= 16 and any(c.isdigit() for c in user)):
        return f"{scheme}{REDACTED}@"
    return m.group(0)


def _bearer(m: re.Match[str]) -> str:
    token = m.group(2)
    # "Bearer authentication" in prose is not a token; a real one has digits or symbols.
    if len(token) >= 20 or any(not c.isalpha() for c in token):
        return m.group(1) + REDACTED
    return m.group(0)


def _basic(m: re.Match[str]) -> str:
    token = m.group(2)
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return m.group(0)
    return m.group(1) + REDACTED if b":" in decoded else m.group(0)


def _auth_header(m: re.Match[str]) -> str:
    return m.group(0) if is_placeholder(m.group(2)) else m.group(1) + REDACTED


def _kv(m: re.Match[str]) -> str:
    key, sep, value = m.group(1), m.group(2), m.group(3)
    quote = ""
    if value.startswith('\\"'):
        quote = '\\"'  # a JSON string inside a JSON string: \"password\": \"…\"
    elif value[:1] in ("\"", "'") and len(value) >= 2:
        quote = value[0]
    inner = value[len(quote):len(value) - len(quote)] if quote else value
    if REDACTED in inner or inner.lower() in _SCHEMES:
        return m.group(0)  # masked already, or `Authorization: Basic` before its masked token
    if is_secret_name(key.lstrip("_-")):
        if is_placeholder(inner) or inner in ("|", ">", "|-", ">-"):
            return m.group(0)
        return f"{key}{sep}{quote}{REDACTED}{quote}"
    if is_url_name(key) and "@" in inner:
        return f"{key}{sep}{quote}{_USERINFO.sub(lambda u: _userinfo(u, True), inner)}{quote}"
    if quote and len(inner) >= _MIN_LEN:
        # A quoted value may hold pairs of its own: {"message": "DB_PASS=…"}, a file in JSON.
        return f"{key}{sep}{quote}{_KV.sub(_kv, inner)}{quote}"
    return m.group(0)


_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "negotiate", "apikey", "sso-key"})


def _block(m: re.Match[str]) -> str:
    if not is_secret_name(m.group(2)):
        return m.group(0)
    body = m.group(3)
    indent = body[: len(body) - len(body.lstrip(" \t"))]
    return m.group(0)[: m.start(3) - m.start(0)] + indent + REDACTED + ("\n" if
                                                                        body.endswith("\n")
                                                                        else "")


_URL_HINTS = ("://",)
_Rule = tuple[tuple[str, ...], bool, re.Pattern[str], Callable[[re.Match[str]], str]]
# (hints, cased, pattern, replacement): the pattern runs only when the text holds a hint —
# lowercased unless `cased`. A substring test is far cheaper than any of these scans.
_RULES: tuple[_Rule, ...] = (
    (("private key",), False, _PEM, _pem),
    (("ls0tls1crudjti",), False, _B64_PEM, _b64_pem),
    (("hooks.slack.com", "/api/webhooks/"), False, _WEBHOOK, lambda m: m.group(1) + REDACTED),
    (_TOKEN_HINTS, False, _TOKENS, lambda _: REDACTED),
    (("SK",), True, _TWILIO, lambda _: REDACTED),
    (_URL_HINTS, False, _USERINFO, _userinfo),
    (("authorization",), False, _AUTH_HEADER, _auth_header),
    (("bearer",), False, _BEARER, _bearer),
    (("basic",), False, _BASIC, _basic),
    (("|\n", ">\n", "|-\n", ">-\n", "|+\n", ">+\n"), True, _BLOCK, _block),
    (_KV_HINTS, False, _KV, _kv),
)
_MIN_LEN = 6  # nothing shorter is a credential worth a scan ("pw=abc" is the shortest form)
# One scan of the lowercased text that every rule above needs to match (a pair needs its
# secret-ish word right before a separator): most strings of an object fail it and are done.
_GATE = re.compile("|".join((
    *(re.escape(h) for hints, cased, _, _ in _RULES if not cased and hints is not _KV_HINTS
      for h in hints),
    r"(?:pass|pwd|pw|secret|token|key|cred|auth|sig)[\w.-]*(?:\\?[\"'])?[ \t]*[:=]",
    r"[:=][ \t]*[|>]",  # a YAML block scalar: its key is judged by _BLOCK
    "@",  # a URL's userinfo
)))
# In a long text, the lines where a pair may be: _KV (a call into Python per pair it finds)
# runs on those lines only — in a JSON or YAML document that is a few lines of hundreds.
_KV_LINES = re.compile(r"(?:pass|pwd|pw|secret|token|key|cred|auth|sig)[\w.-]*(?:\\?[\"'])?"
                       r"[ \t]*[:=]")


def _kv_lines(text: str, lower: str) -> str:
    if len(lower) != len(text):  # lowercasing moved the offsets (rare Unicode): scan it all
        return _KV.sub(_kv, text)
    out: list[str] = []
    pos = 0
    for m in _KV_LINES.finditer(lower):
        if m.start() < pos:
            continue  # on a line already done
        start = max(lower.rfind("\n", 0, m.start()) + 1, pos)
        end = lower.find("\n", m.end())
        end = len(text) if end < 0 else end
        out += (text[pos:start], _KV.sub(_kv, text[start:end]))
        pos = end
    return "".join(out) + text[pos:] if out else text


_SHORT = 256  # a field's value: gated by one regex scan, and remembered (they repeat a lot)


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Masks credentials in free text (logs, messages, one field's value): known values and
    recognisable shapes. Idempotent; text without a credential comes back as the same object."""
    for s in secrets:
        if s:
            text = text.replace(s, REDACTED)
    if len(text) < _MIN_LEN:
        return text
    if len(text) <= _SHORT:
        out = _short(text)
        return text if out == text else out  # the caller's own object when nothing changed
    return _rules(text, text.lower(), _long_hint)


@functools.lru_cache(maxsize=8192)
def _short(text: str) -> str:
    # In a short string the combined gate is cheaper than checking each hint on its own.
    lower = text.lower()
    if _GATE.search(lower) is None and "SK" not in text:
        return text
    return _rules(text, lower, _short_hint)


def _short_hint(hints: tuple[str, ...], text: str, lower: str) -> bool:
    return any(h in lower for h in hints)


def _long_hint(hints: tuple[str, ...], text: str, lower: str) -> bool:
    if hints is _URL_HINTS:  # "@" first: one memchr; "://" alone is no userinfo
        return "@" in text and "://" in text
    if hints is _TOKEN_HINTS:  # the many vendor prefixes, checked by family
        return ("_" in text and any(h in lower for h in _UNDERSCORED)) or \
            any(h in lower for h in _OTHER_HINTS) or _AWS.search(text) is not None
    return any(h in lower for h in hints)


def _rules(text: str, lower: str,
           hinted: Callable[[tuple[str, ...], str, str], bool]) -> str:
    for hints, cased, pattern, replace in _RULES:
        if any(h in text for h in hints) if cased else hinted(hints, text, lower):
            new = _kv_lines(text, lower) if pattern is _KV and hinted is _long_hint else \
                pattern.sub(replace, text)
            if new != text:
                text, lower = new, new.lower()
    return text


def redact_value(name: str, value: str) -> str:
    """A named value (an env entry, a ConfigMap key, an annotation): masked whole when its name
    says it is a credential, its userinfo when it is a URL, else by its shape."""
    if is_secret_name(name) and not is_placeholder(value):
        return REDACTED
    if is_url_name(name) and "@" in value:
        value = _USERINFO.sub(lambda u: _userinfo(u, True), value)
    return redact_text(value)


def contains_credential(value: str) -> bool:
    """A value that carries a credential by its shape, whatever its name."""
    return redact_text(value) != value
