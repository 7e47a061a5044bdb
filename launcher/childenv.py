"""The environment a process Interlock starts begins with: what any process needs to run, find CA
certificates and reach the network — never the rest of the caller's environment.

`interlock up` used to give every service the caller's whole environment, and so the model's
key (OPENAI_API_KEY), cloud credentials and whatever else the person had exported, to services
that need none of it: a compromised notifier held the model key. Each service now starts from
this allow-list plus the settings that are its own (launcher/stack.py `env_for`)."""

from __future__ import annotations

from collections.abc import Mapping

BASE_NAMES = frozenset({
    # to run at all: where programs are, whose home, which language and time zone
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    # CA certificates (a corporate CA for the model's API or the cluster)
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    # proxies, in both spellings
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    # which Python code runs (a checkout on PYTHONPATH, a virtualenv)
    "PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE",
})
BASE_PREFIXES = ("LC_",)  # locale categories


def base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of `environ`."""
    return {k: v for k, v in environ.items()
            if k in BASE_NAMES or k.startswith(BASE_PREFIXES)}
