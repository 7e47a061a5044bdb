"""`interlock slack manifest`: the Slack app Interlock needs, as a Slack app manifest (JSON, one
of the two formats Slack takes) to paste at api.slack.com/apps ("Create New App" → "From an app
manifest" → JSON), and what to do next.

Offline: it prints text and talks to nobody. The manifest goes to stdout (redirect it to a file);
the next steps go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from clients import safe_text
from clients.output import UsageError

# The one path Slack calls (the gateway's; no bearer token: the gate checks Slack's signature).
INTERACTIONS_PATH = "/v1/slack/interactions"
# chat:write posts and updates the approval messages; chat:write.public lets the bot post to a
# public channel it was not invited to. Opening the deny dialog (views.open) and answering a
# click (response_url) need no scope of their own.
BOT_SCOPES = ("chat:write", "chat:write.public")


def manifest(public_url: str, name: str = "Interlock") -> dict[str, Any]:
    base = public_url.rstrip("/")
    return {
        "display_information": {
            "name": name,
            "description": "Approve or deny the Kubernetes writes Interlock holds",
            "background_color": "#1d2630",
        },
        "features": {"bot_user": {"display_name": name, "always_online": False}},
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "interactivity": {"is_enabled": True,
                              "request_url": f"{base}{INTERACTIONS_PATH}"},
            "org_deploy_enabled": False,
            "socket_mode_enabled": False,
            "token_rotation_enabled": False,
        },
    }


def next_steps(public_url: str) -> str:
    base = public_url.rstrip("/")
    return f"""\
Next steps (README, "Approve from Slack"):
  1. https://api.slack.com/apps → Create New App → From an app manifest → your workspace →
     JSON → paste the manifest above → Create. When someone clicks Approve or Deny, or
     submits the deny dialog, Slack will POST to (it must reach the gateway over HTTPS):
       {base}{INTERACTIONS_PATH}
  2. Install to Workspace (OAuth & Permissions), then copy:
       Bot User OAuth Token (xoxb-…)          → INTERLOCK_SLACK_BOT_TOKEN for the notifier
                                                and the gateway (it opens the deny dialog)
       Basic Information → Signing Secret     → INTERLOCK_SLACK_SIGNING_SECRET for the gate
                                                only (the gate checks every click)
  3. The channel's ID (channel details → About, at the bottom: C…) → INTERLOCK_SLACK_CHANNEL
     for the notifier, and the URL of the Open button:
       INTERLOCK_PUBLIC_URL={base}   (notifier)
     `interlock up` hands each variable to its service only: export them before starting it.
  4. Link each approver's Slack user to their Interlock principal (an admin):
       interlock keys enroll PRINCIPAL --slack TEAM_ID/USER_ID
     (USER_ID: their Slack profile → ⋮ → Copy member ID; TEAM_ID: T…, in the workspace's URL
     or about page). A click by anyone not linked is refused, and they are told why.
  5. Writes in the policy's key_signed_namespaces (default: production) count only decisions
     signed with a person's own key: their Slack message has Open alone (a passkey in the
     Command Center, or `interlock approve`).
"""


def add_slack_parser(sub: Any) -> None:
    p = sub.add_parser("slack", help="set up approvals from Slack")
    ss = p.add_subparsers(dest="slack_command", required=True)
    m = ss.add_parser("manifest",
                      help="print the Slack app manifest (scopes, request URL) and next steps")
    m.add_argument("--url", help="Interlock's public HTTPS URL, as Slack reaches the gateway "
                                 "(default: $INTERLOCK_PUBLIC_URL)")
    m.add_argument("--name", default="Interlock", help="the app's and the bot's name in Slack")


def public_url(given: str | None) -> str:
    url = (given or os.environ.get("INTERLOCK_PUBLIC_URL", "")).strip()
    if not url:
        raise UsageError("--url: Interlock's public URL, e.g. https://interlock.example.com")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise UsageError(f"--url must be an https:// URL that Slack can reach (Slack calls "
                         f"request URLs over HTTPS only), not {url!r}")
    if parts.query or parts.fragment:
        raise UsageError("--url: the base URL only, without ?query or #fragment")
    return url.rstrip("/")


def run(args: argparse.Namespace) -> int:
    try:
        url = public_url(args.url)
        if len(args.name) > 35:  # Slack's limit for an app's and a bot's name
            raise UsageError("--name: at most 35 characters")
    except UsageError as exc:
        sys.stderr.write(f"interlock slack manifest: {safe_text.line(exc)}\n")
        return 2
    doc = manifest(url, args.name)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()
    sys.stderr.write("\n" + next_steps(url))
    return 0
