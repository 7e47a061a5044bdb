"""INTERLOCK_OIDC_*: the claim → role map's syntax and matching, the settings' checks, and the
algorithms a published key may verify (services/gateway/oidc.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from launcher.cli import describe_setup
from launcher.stack import Stack, StackConfig
from services.gateway.oidc import OidcSettings, RoleMap, algorithms_for, looks_like_jwt
from services.gateway.settings import GatewaySettings
from services.runtime.errors import ConfigError

MAP = "groups:sre-approvers=approver, groups:sre=operator,groups:*=viewer,\n" \
      "realm_access.roles:platform-admin=admin,email:cto@example.com=approver"


def test_roles_add_up_over_every_rule_a_person_matches() -> None:
    roles = RoleMap.parse(MAP)
    assert roles.roles({"groups": ["sre", "sre-approvers"]}) == {"operator", "approver",
                                                                 "viewer"}
    assert roles.roles({"groups": ["marketing"]}) == {"viewer"}
    assert roles.roles({"groups": "sre"}) == {"operator", "viewer"}  # a single string too
    assert roles.roles({"groups": []}) == frozenset()  # `*` needs a value
    assert roles.roles({"realm_access": {"roles": ["platform-admin"]}}) == {"admin"}
    assert roles.roles({"email": "cto@example.com"}) == {"approver"}
    # A value is matched exactly, never as a prefix or a pattern.
    assert roles.roles({"groups": ["sre-approvers-old", "SRE"]}) == {"viewer"}
    assert RoleMap.parse("").roles({"groups": ["sre"]}) == frozenset()


@pytest.mark.parametrize(("text", "message"), [
    ("groups=approver", "is not claim:value=role"),
    ("groups:sre=root", "unknown role 'root'"),
    ("groups:sre", "is not claim:value=role"),
])
def test_a_role_map_that_does_not_parse_stops_the_gateway(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RoleMap.parse(text)


def test_settings_from_the_environment() -> None:
    assert OidcSettings.from_env({}) is None
    s = OidcSettings.from_env({"INTERLOCK_OIDC_ISSUER": "https://idp.example.com/",
                               "INTERLOCK_OIDC_CLIENT_ID": "web",
                               "INTERLOCK_OIDC_CLIENT_SECRET": "shh-0123456789",
                               "INTERLOCK_OIDC_ROLES": "groups:sre=operator"})
    assert s is not None
    assert (s.issuer, s.audiences, s.scopes) == (
        "https://idp.example.com", ("web",), "openid profile email groups offline_access")
    assert "shh" not in repr(s)  # the secret stays out of any repr that is logged
    with pytest.raises(ConfigError, match="https://"):
        OidcSettings.from_env({"INTERLOCK_OIDC_ISSUER": "http://idp.example.com",
                               "INTERLOCK_OIDC_CLIENT_ID": "web"})
    with pytest.raises(ConfigError, match="INTERLOCK_OIDC_CLIENT_ID"):
        OidcSettings.from_env({"INTERLOCK_OIDC_ISSUER": "https://idp.example.com"})
    # Clock skew: 30 s unless told, never more than 5 minutes (an expired token stays expired).
    base = {"INTERLOCK_OIDC_ISSUER": "https://idp.example.com", "INTERLOCK_OIDC_CLIENT_ID": "w"}
    assert s.leeway_s == 30
    skewed = OidcSettings.from_env({**base, "INTERLOCK_OIDC_CLOCK_SKEW": "0"})
    assert skewed is not None and skewed.leeway_s == 0
    for bad in ("301", "-1", "soon"):
        with pytest.raises(ConfigError, match="INTERLOCK_OIDC_CLOCK_SKEW"):
            OidcSettings.from_env({**base, "INTERLOCK_OIDC_CLOCK_SKEW": bad})
    # A gateway may run with sign-in alone (no static tokens).
    gw = GatewaySettings.from_env({"INTERLOCK_OIDC_ISSUER": "https://idp.example.com",
                                   "INTERLOCK_OIDC_CLIENT_ID": "web",
                                   "INTERLOCK_OIDC_CLI_CLIENT_ID": "cli",
                                   "INTERLOCK_NATS_PASSWORD": "x", "INTERLOCK_KEYRING_FILE": "k",
                                   "INTERLOCK_SIGNING_KEY_FILE": "s"})
    assert gw.oidc is not None
    assert gw.oidc.audiences == ("web", "cli")


def test_a_key_verifies_only_with_its_own_asymmetric_algorithms() -> None:
    assert algorithms_for(RSAKey.generate_key(2048))[:1] == ("RS256",)
    assert algorithms_for(RSAKey.generate_key(2048, parameters={"alg": "PS256"})) == ("PS256",)
    assert algorithms_for(RSAKey.generate_key(2048, parameters={"alg": "HS256"})) == ()
    assert algorithms_for(ECKey.generate_key("P-256")) == ("ES256",)
    assert algorithms_for(OKPKey.generate_key("Ed25519")) == ("EdDSA", "Ed25519")
    assert algorithms_for(OctKey.generate_key(256)) == ()
    assert looks_like_jwt("a.b.c")
    assert not looks_like_jwt("a.b.")
    assert not looks_like_jwt("static-token-0123456789")


def test_interlock_up_says_what_to_register_and_refuses_a_bad_role_map(tmp_path: Path) -> None:
    def setup(**env: str) -> str:
        stack = Stack(StackConfig(data_dir=tmp_path, http_port=8080, extra_env=env))
        return "\n".join(describe_setup(stack))

    assert "Sign-in" not in setup()
    text = setup(INTERLOCK_OIDC_ISSUER="https://idp.example.com",
                 INTERLOCK_OIDC_CLIENT_ID="web", INTERLOCK_OIDC_CLIENT_SECRET="shh-0123456789",
                 INTERLOCK_OIDC_ROLES="groups:sre=operator,groups:sre-approvers=approver")
    assert "  Sign-in         https://idp.example.com (Command Center client web, CLI client " \
           "web; 2 role rules)" in text
    assert "redirect URI  http://localhost:8080/v1/auth/callback" in text
    assert "shh-" not in text
    with pytest.raises(ConfigError, match="unknown role 'boss'"):
        setup(INTERLOCK_OIDC_ISSUER="https://idp.example.com", INTERLOCK_OIDC_CLIENT_ID="web",
              INTERLOCK_OIDC_ROLES="groups:sre=boss")
