#!/usr/bin/env bash
# Set-up for the reference benchmarks (../shared/anchors): a throwaway venv with LangGraph and
# holdpoint, and a local PostgreSQL for LangGraph's Postgres checkpointer. Idempotent.
# The venv lives in bench/.anchor-venv (git-ignored; never commit it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${ANCHOR_VENV:-$here/.anchor-venv}"
py="${PY:-python3.11}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
# The anchors use nats-py, msgspec and aiohttp too (jetstream_hop, replay_floor, SSE floor).
"$venv/bin/pip" install -q langgraph langgraph-checkpoint-sqlite langgraph-checkpoint-postgres \
  "psycopg[binary]" holdpoint nats-py msgspec aiohttp py-spy pyinstrument

# PostgreSQL (Debian package), started as in anchors/README.md.
if ! command -v pg_ctlcluster >/dev/null; then
  apt-get install -y postgresql
fi
ver="$(ls /usr/lib/postgresql | sort -n | tail -1)"
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
fi
su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'pg'\""
su postgres -c "psql -lqt | cut -d'|' -f1 | grep -qw lg || createdb lg"
echo "anchors ready: venv $venv, postgres $ver at postgresql://postgres:pg@127.0.0.1:5432/lg"
