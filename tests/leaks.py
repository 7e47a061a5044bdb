"""The leak corpus of issue 16: credentials as they really sit in ConfigMaps, env, old rollout
templates, pod logs and event messages — and safe look-alikes that must stay readable.

Every `Leak.secret` is a value that must never reach the log, SSE or a model; `Leak.text` is a
realistic line carrying it (for the unit tests of `redact_text`). The e2e test
(tests/e2e/test_read_leaks.py) seeds the same values into a real cluster with `configmap_data`,
`env_v1`/`env_v2`, `LOG_LINES` and `EVENT_MESSAGE`. Values are random, in each vendor's real
format; the private keys and the public certificate are generated at import (cryptography)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Leak:
    kind: str
    secret: str  # must never appear
    text: str  # a realistic line (or file) that carries it


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- generated keys and a public certificate ------------------------------------------------------

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = _RSA.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()
OPENSSH_KEY = ed25519.Ed25519PrivateKey.generate().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
    serialization.NoEncryption()).decode()
_EC = ec.generate_private_key(ec.SECP256R1())
EC_PEM = _EC.private_bytes(serialization.Encoding.PEM,
                           serialization.PrivateFormat.TraditionalOpenSSL,
                           serialization.NoEncryption()).decode()
_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "billing-ca.example.com")])
_now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CA_CERT = x509.CertificateBuilder().subject_name(_name).issuer_name(_name).public_key(
    _EC.public_key()).serial_number(1616).not_valid_before(_now).not_valid_after(
    _now + dt.timedelta(days=3650)).sign(_EC, hashes.SHA256()).public_bytes(
    serialization.Encoding.PEM).decode()


def pem_body(pem: str) -> list[str]:
    """The base64 lines of a PEM block: what must not leak of a private key."""
    return [ln for ln in pem.splitlines() if ln and not ln.startswith("-----") and len(ln) >= 20]


# -- a JWT and header credentials -----------------------------------------------------------------

_jwt_head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
_jwt_body = _b64url(json.dumps({"sub": "svc-billing", "iss": "https://auth.example.com",
                                "exp": 1796000000}).encode())
JWT = f"{_jwt_head}.{_jwt_body}." + _b64url(
    hmac.new(b"k", f"{_jwt_head}.{_jwt_body}".encode(), hashlib.sha256).digest())
BASIC = _b64(b"billing-ci:UrKLuOsPU6Ty6X8uuDmN")
DOCKER_AUTH = _b64(b"billing-puller:y1r_JqDGN0jeFfiWaQuk")
KUBE_CLIENT_KEY = _b64(EC_PEM.encode())

# -- the corpus -----------------------------------------------------------------------------------

AWS_ID = "AKIAX44S0O2A0QPOASTV"
AWS_ID_2 = "AKIAJTBOQBJB33SOTXQ0"
AWS_SECRET = "lS+2wLfKkaVE/tNMO66iv9b4/b8p6k+csDZVefZO"
STRIPE_LIVE = "sk_live_51EGQ80YRP10eougTfIhpazOc61hVRd82Wzj5OSqplLapHp6hgPjry"
STRIPE_TEST = "sk_test_51AczD4UDDqcdbTmBQq79GygZnhAOgshDBj1zpi4i4zBGozlxQF0l3"
STRIPE_RESTRICTED = "rk_live_51AnQB2bFtKsh2eWYtVFpIPEnLCGiFJfWOQgUQudDfZFUWdGvIkgTx"
STRIPE_WEBHOOK = "whsec_JoCiXMS6AAWJVy7Q3W7VTPl6ceolQtjo"
GH_PAT = "ghp_ZZGnELEwiTDVT6lgmbf7xUsP0P9gjcl7NSWS"
GH_OAUTH = "gho_hU8WownKBfl7fDf4cKjjRUXkXnAcWwhR3zAq"
GH_FINE = ("github_pat_11HYMW2X1BWMFNY0DN09VC_HzwbPjAp9ukzdyc3zO2VCP7cj59akV4mQLsNQLA91bdh50H0Iai"
           "uMNfLItC")
SLACK_BOT = "xoxb-296499681290-4447514649701-hv4zr83Cs1Ynr9aESaUm3fZA"
SLACK_HOOK_PATH = "TJOV0GRAU/BKX0SXNKM7C/IfraTbJg2V1rmghFFwba4eTq"
GOOGLE_KEY = "AIza1pQ19WEzNuCxwXTjsdAs0lHL2RPYzQF6dcS"
GOOGLE_OAUTH = "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"
OPENAI_PROJECT = "sk-proj-c400lsEFcwfvHCU_e-qFO81VQFL0b0aA3taBrdmzEZJb6hPNuSvXppcHsjTqu0whpfFd"
OPENAI_LEGACY = "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"
ANTHROPIC = ("sk-ant-api03-q2xqzuB7FAs2KemDVLDhnblmuseX3UNDuwRSY1EM0tSn1W_TsWF23xz3iW0nbF7OT6ixKkmV"
             "RJhA3nI3EPj26FVJUO4lF-YvUapfAA")
TWILIO_KEY = "SKe9b5b2caf443bc961a985b994ddc0899"
TWILIO_TOKEN = "ebf9aa91e5fbd602af081ffbc79cac8a"
SENDGRID = "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"
NPM = "npm_lyzixg2JHjfaecXMQdaD9y30aC4xaCnYhhJ1"
DATADOG = "7ae884c33fed5b7c528b5fe19b5fbee1"
SENTRY_KEY = "c6e4e057c75000db62208709535e7ab4"
AZURE_KEY = ("ojekgVup4q6tKkdeWJLKM107lNdZx98dX7kbfueXaEj7bUIDd+3wslT+1/Tnek1JhSEhi3rzATTUC+"
             "097ljWH1==")
DB_PASS = "3ew+3JDC0SkUaaGv9XVV"
OLD_ADMIN_PASSWORD = "stRZ4U-ElkoAlsVeTMR7"
SPRING_PASSWORD = "6QyPXkI8gPlBvJqYsedJ"
PG_PASSWORD = "1ptdthR_ADjjRg7Ur9V5"
AMQP_PASSWORD = "UFE2lpYt+P2Ak6ffE6gc"
REDIS_PASSWORD = "c6IWQYATxeVWMoIiHpSy"
MONGO_PASSWORD = "rSdDdlg-5Z2CrXfKXGf9"
MSSQL_PASSWORD = "jTlqvmQTm9-DNQPcmrKt"
YAML_PASSWORD = "S_rNKb7zd3ZbhQNALIVM"
SESSION_SECRET = "GowSZJtiBR-vqrb3vo5n"
JSON_SECRET = "hxz-G6KNlwyeKZ_f39JM"
QUERY_PASSWORD = "bsuBWt2qPGHN3oI0QN23"
ARG_PASSWORD = "Wn5q-Tb8zLrP2dXyKv7M"
OPAQUE_BEARER = "4f9c2d7e1b8a4f3c9e6d2b1a7c5e8f0d2a9b"

LEAKS: tuple[Leak, ...] = (
    Leak("aws access key id (credentials file)", AWS_ID, f"aws_access_key_id = {AWS_ID}"),
    Leak("aws access key id (log)", AWS_ID_2, f"using static credentials {AWS_ID_2} for s3"),
    Leak("aws_secret_access_key", AWS_SECRET, f"aws_secret_access_key = {AWS_SECRET}"),
    Leak("stripe secret key, live", STRIPE_LIVE, f"stripe: {STRIPE_LIVE}"),
    Leak("stripe secret key, test", STRIPE_TEST, f"PAYMENTS_BACKEND={STRIPE_TEST}"),
    Leak("stripe restricted key", STRIPE_RESTRICTED,
         f"stripe client init full={STRIPE_RESTRICTED}"),
    Leak("stripe webhook secret", STRIPE_WEBHOOK,
         f"kubectl set env deployment/billing-api WEBHOOK_SIGNING_SECRET={STRIPE_WEBHOOK}"),
    Leak("github personal token", GH_PAT, f"GITHUB_TOKEN={GH_PAT}"),
    Leak("github oauth token in a clone URL", GH_OAUTH,
         f"cloning https://{GH_OAUTH}@github.com/example/billing-migrations.git"),
    Leak("github fine-grained token", GH_FINE, f"Failed to pull chart: 401 with {GH_FINE}"),
    Leak("slack bot token", SLACK_BOT, f"--slack-token {SLACK_BOT}"),
    Leak("slack webhook URL", SLACK_HOOK_PATH,
         f"webhook: https://hooks.slack.com/services/{SLACK_HOOK_PATH}"),
    Leak("google api key", GOOGLE_KEY, f'"maps": "{GOOGLE_KEY}"'),
    Leak("google oauth client secret", GOOGLE_OAUTH, f'"client": "{GOOGLE_OAUTH}"'),
    Leak("openai project key", OPENAI_PROJECT, f"key_material: {OPENAI_PROJECT}"),
    Leak("openai legacy key", OPENAI_LEGACY,
         f"openai.AuthenticationError: Incorrect API key provided: {OPENAI_LEGACY}."),
    Leak("anthropic key", ANTHROPIC, f"LLM_FALLBACK={ANTHROPIC}"),
    Leak("twilio api key", TWILIO_KEY, f"TWILIO_API_KEY={TWILIO_KEY}"),
    Leak("twilio auth token (by name)", TWILIO_TOKEN, f"TWILIO_AUTH_TOKEN={TWILIO_TOKEN}"),
    Leak("sendgrid key", SENDGRID, f"sendgrid.api-key={SENDGRID}"),
    Leak("npm token", NPM, f"//registry.npmjs.org/:_authToken={NPM}"),
    Leak("datadog api key (by name)", DATADOG, f"DD_API_KEY={DATADOG}"),
    Leak("sentry DSN userinfo", SENTRY_KEY,
         f"SENTRY_DSN=https://{SENTRY_KEY}@o450123.ingest.sentry.io/5501234"),
    Leak("azure storage account key", AZURE_KEY,
         "DefaultEndpointsProtocol=https;AccountName=billingfiles;"
         f"AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net"),
    Leak("RSA private key (PEM)", pem_body(RSA_PEM)[3], RSA_PEM),
    Leak("OpenSSH private key", pem_body(OPENSSH_KEY)[1], OPENSSH_KEY),
    Leak("kubeconfig client-key-data (base64 PEM)", KUBE_CLIENT_KEY,
         f"    client-key-data: {KUBE_CLIENT_KEY}"),
    Leak("JWT", JWT, f"forwarding request with token {JWT}"),
    Leak("basic auth header", BASIC, f"> Authorization: Basic {BASIC}"),
    Leak("bearer header (opaque)", OPAQUE_BEARER,
         f'upstream call headers={{"Authorization": "Bearer {OPAQUE_BEARER}"}}'),
    Leak("postgres URL password", PG_PASSWORD,
         f"DATABASE_URL=postgres://billing:{PG_PASSWORD}@billing-db.billing.svc:5432/billing"),
    Leak("amqp URL password", AMQP_PASSWORD,
         f"connecting to amqp://billing:{AMQP_PASSWORD}@rabbitmq.billing.svc:5672/%2f"),
    Leak("redis URL password (no user)", REDIS_PASSWORD,
         f"REDIS_URL=redis://:{REDIS_PASSWORD}@redis.billing.svc:6379/0"),
    Leak("mongodb+srv URL password", MONGO_PASSWORD,
         f'"mongo": "mongodb+srv://billing:{MONGO_PASSWORD}@cluster0.x1y2z.mongodb.net/billing"'),
    Leak("env DB_PASS (no known shape)", DB_PASS, f"DB_PASS={DB_PASS}"),
    Leak("env ADMIN_PASSWORD (old revision)", OLD_ADMIN_PASSWORD,
         f"OLD_ADMIN_PASSWORD={OLD_ADMIN_PASSWORD}"),
    Leak("java property spring.datasource.password", SPRING_PASSWORD,
         f"spring.datasource.password={SPRING_PASSWORD}"),
    Leak("connection string Password=…;", MSSQL_PASSWORD,
         "Server=tcp:sql.example.net,1433;Database=billing;User ID=billing;"
         f"Password={MSSQL_PASSWORD};Encrypt=True"),
    Leak("yaml password:", YAML_PASSWORD, f"  password: {YAML_PASSWORD}"),
    Leak(".env secret", SESSION_SECRET, f"SESSION_SECRET={SESSION_SECRET}"),
    Leak("json client_secret", JSON_SECRET, f'{{"client_secret": "{JSON_SECRET}"}}'),
    Leak("password in a query string", QUERY_PASSWORD,
         f"GET /login?user=ops&password={QUERY_PASSWORD}&next=/ 302"),
    Leak("command-line --db-password=", ARG_PASSWORD, f"--db-password={ARG_PASSWORD}"),
    Leak("docker config auths", DOCKER_AUTH,
         json.dumps({"auths": {"registry.example.com": {"auth": DOCKER_AUTH}}})),
)

# -- the look-alikes: useful output that must stay intact -----------------------------------------

DIGEST = "sha256:2124114b54fd006904b4d63af3524c05962ab04f28d63832d75683f12168990f"
IMAGE = f"registry.example.com/billing/api:v2.14.3@{DIGEST}"
GIT_SHA = "f43b523e1198f3c89aad6e3c487f79cd0e18d9ae"
REQUEST_ID = "8d0f5a8e-3c1b-4c7e-9a65-0b2f6e4d1c37"
PLAIN_URL = "https://orders.billing.svc.cluster.local:8443/v1/charges?limit=10"
PLAIN_DB_URL = "postgres://billing-replica.billing.svc:5432/billing"
JDBC_URL = "jdbc:postgresql://billing-db.billing.svc:5432/billing"
TIMESTAMP = "2026-12-07T02:00:00Z"
CA_B64 = _b64(CA_CERT.encode())

LOOKALIKES: tuple[str, ...] = (
    DIGEST, IMAGE, GIT_SHA, REQUEST_ID, PLAIN_URL, PLAIN_DB_URL, JDBC_URL, TIMESTAMP,
    pem_body(CA_CERT)[1], CA_B64, "token_ttl=30s", "TOKEN_TTL_SECONDS", "3600",
    "password_min_length=12", "AUTH_MODE", "oauth2", "server.port=8080", "DB_PASSWORD=",
    "ssh://git@github.com/example/billing-migrations.git", "0.0.0.0:8080",
    "password reset email sent to user 4711", "GET /healthz HTTP/1.1\" 200",
)

# -- where the e2e test puts them -----------------------------------------------------------------

APPLICATION_PROPERTIES = f"""\
server.port=8080
spring.datasource.url={JDBC_URL}
spring.datasource.username=billing
spring.datasource.password={SPRING_PASSWORD}
sendgrid.api-key={SENDGRID}
token_ttl=30s
password_min_length=12
"""

DOT_ENV = f"""\
# local overrides
SESSION_SECRET={SESSION_SECRET}
DB_PASSWORD=
DATABASE_URL=postgres://billing:{PG_PASSWORD}@billing-db.billing.svc:5432/billing
REDIS_URL=redis://:{REDIS_PASSWORD}@redis.billing.svc:6379/0
GITHUB_TOKEN={GH_PAT}
REPLICA_URL={PLAIN_DB_URL}
"""

CONFIG_YAML = f"""\
listen: 0.0.0.0:8080
maintenance_window_start: "{TIMESTAMP}"
notifications:
  webhook: https://hooks.slack.com/services/{SLACK_HOOK_PATH}
ai:
  endpoint: https://api.openai.com/v1
  key_material: {OPENAI_PROJECT}
database:
  host: billing-db.billing.svc
  user: billing
  password: {YAML_PASSWORD}
migrations:
  repo: ssh://git@github.com/example/billing-migrations.git
"""

SETTINGS_JSON = json.dumps({
    "maps": GOOGLE_KEY,
    "oauth": {"client_id": "billing-web", "client_secret": JSON_SECRET,
              "client": GOOGLE_OAUTH},
    "mongo": f"mongodb+srv://billing:{MONGO_PASSWORD}@cluster0.x1y2z.mongodb.net/billing",
    "upstream": PLAIN_URL,
}, indent=2)

AWS_CREDENTIALS = f"""\
[default]
aws_access_key_id = {AWS_ID}
aws_secret_access_key = {AWS_SECRET}
region = eu-west-1
"""

KUBECONFIG_FILE = f"""\
apiVersion: v1
kind: Config
users:
- name: billing-ci
  user:
    client-key-data: {KUBE_CLIENT_KEY}
"""


def configmap_data() -> dict[str, str]:
    return {
        "application.properties": APPLICATION_PROPERTIES,
        ".env": DOT_ENV,
        "config.yaml": CONFIG_YAML,
        "settings.json": SETTINGS_JSON,
        "credentials": AWS_CREDENTIALS,
        "kubeconfig": KUBECONFIG_FILE,
        "deploy-key.pem": RSA_PEM,
        "id_ed25519": OPENSSH_KEY,
        "ca.crt": CA_CERT,
        "ca-bundle.b64": CA_B64,
        "stripe": STRIPE_LIVE,
        "mssql": ("Server=tcp:sql.example.net,1433;Database=billing;User ID=billing;"
                  f"Password={MSSQL_PASSWORD};Encrypt=True"),
        "storage": ("DefaultEndpointsProtocol=https;AccountName=billingfiles;"
                    f"AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net"),
        "docker-config.json": json.dumps(
            {"auths": {"registry.example.com": {"auth": DOCKER_AUTH}}}),
        ".npmrc": f"//registry.npmjs.org/:_authToken={NPM}\n",
        "image": IMAGE,
        "git_sha": GIT_SHA,
    }


def _env(pairs: dict[str, str]) -> list[dict[str, object]]:
    return [{"name": k, "value": v} for k, v in pairs.items()]


def env_v1() -> list[dict[str, object]]:
    """The first revision's env: what `rollout history --revision 1` shows later."""
    return [*_env({
        "OLD_ADMIN_PASSWORD": OLD_ADMIN_PASSWORD,
        "PAYMENTS_BACKEND": STRIPE_TEST,
        "GIT_SHA": GIT_SHA,
    }), {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "billing-db",
                                                                "key": "password"}}}]


def env_v2() -> list[dict[str, object]]:
    return [*_env({
        "DB_PASS": DB_PASS,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_API_KEY": TWILIO_KEY,
        "DD_API_KEY": DATADOG,
        "LLM_FALLBACK": ANTHROPIC,
        "DATABASE_URL": f"postgres://billing:{PG_PASSWORD}@billing-db.billing.svc:5432/billing",
        "SENTRY_DSN": f"https://{SENTRY_KEY}@o450123.ingest.sentry.io/5501234",
        "ORDERS_API_URL": PLAIN_URL,
        "TOKEN_TTL_SECONDS": "3600",
        "AUTH_MODE": "oauth2",
        "GIT_SHA": GIT_SHA,
    }), {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "billing-db",
                                                                "key": "password"}}}]


ARGS_V2 = ["--listen=:8080", f"--db-password={ARG_PASSWORD}", "--slack-token", SLACK_BOT]
CHANGE_CAUSE = f"kubectl set env deployment/billing-api WEBHOOK_SIGNING_SECRET={STRIPE_WEBHOOK}"

LOG_LINES = [
    "{ts} INFO starting billing-api " + IMAGE,
    f"{{ts}} INFO request_id={REQUEST_ID} GET /healthz HTTP/1.1\" 200",
    f"{{ts}} DEBUG using static credentials {AWS_ID_2} for s3",
    f"{{ts}} DEBUG stripe client init full={STRIPE_RESTRICTED}",
    f"{{ts}} DEBUG cloning https://{GH_OAUTH}@github.com/example/billing-migrations.git",
    f"{{ts}} ERROR openai.AuthenticationError: Incorrect API key provided: {OPENAI_LEGACY}.",
    f"{{ts}} DEBUG forwarding request with token {JWT}",
    f"{{ts}} DEBUG > Authorization: Basic {BASIC}",
    f'{{ts}} DEBUG upstream call headers={{"Authorization": "Bearer {OPAQUE_BEARER}"}}',
    f"{{ts}} INFO connecting to amqp://billing:{AMQP_PASSWORD}@rabbitmq.billing.svc:5672/%2f",
    f"{{ts}} INFO GET /login?user=ops&password={QUERY_PASSWORD}&next=/ 302",
    "{ts} INFO password reset email sent to user 4711",
]

EVENT_MESSAGE = f"Failed to pull chart: 401 Unauthorized with {GH_FINE}"


def secrets() -> list[str]:
    """Every value that must not leak, with the JSON-escaped form when it differs."""
    out: list[str] = []
    for leak in LEAKS:
        out.append(leak.secret)
    for pem in (RSA_PEM, OPENSSH_KEY, EC_PEM):
        out += pem_body(pem)
    escaped = [json.dumps(s)[1:-1] for s in out]
    return sorted(set(out + escaped))


def found_in(blob: str | bytes) -> list[str]:
    """The corpus values present in `blob` (the test's failure message names them)."""
    text = blob.decode(errors="replace") if isinstance(blob, bytes) else blob
    return [s for s in secrets() if s in text]
