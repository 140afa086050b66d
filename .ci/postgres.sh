#!/usr/bin/env bash
# Install and start a local PostgreSQL for the PostgreSQL pass of the test suite; prints its URL.
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null; then
  apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null
fi
cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
[ -n "$cluster" ] || { echo "no PostgreSQL cluster" >&2; exit 1; }
# shellcheck disable=SC2086
pg_ctlcluster $cluster start >/dev/null 2>&1 || true
port=$(pg_lsclusters -h | awk 'NR==1 {print $3}')
for _ in $(seq 30); do runuser -u postgres -- pg_isready -q -p "$port" && break; sleep 1; done
runuser -u postgres -- psql -q -p "$port" -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='meepo') THEN CREATE ROLE meepo LOGIN CREATEDB PASSWORD 'meepo'; END IF; END\$\$;" >/dev/null
echo "postgres://meepo:meepo@127.0.0.1:$port/meepo"
