#!/usr/bin/env bash
# Sets up everything the tests need (Node.js 24, npm packages, PostgreSQL) and runs the
# whole suite: type check, then every test against SQLite and a real PostgreSQL server.
# Safe to run again. Extra arguments are passed to node --test (e.g. a file to run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
node_dir=$(pwd)/.tools/node
[ -x "$node_dir/bin/node" ] && export PATH="$node_dir/bin:$PATH"

as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sudo -u postgres sh -c "$*"; fi; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# PostgreSQL: start Debian's cluster (create one if the package left none) and a test role.
pg_version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
  as_root pg_createcluster "$pg_version" main >/dev/null
fi
read -r cl_version cl_name cl_port cl_status _ < <(pg_lsclusters -h | head -1)
if [ "$cl_status" != online ]; then as_root pg_ctlcluster "$cl_version" "$cl_name" start; fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$cl_port" && break; sleep 0.5; done
as_postgres "psql -q -p $cl_port -v ON_ERROR_STOP=1 -c \"DO \\\$\\\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'slipway_test') THEN
    CREATE ROLE slipway_test LOGIN PASSWORD 'slipway_test';
  END IF; END \\\$\\\$;\"" >/dev/null
as_postgres "psql -q -p $cl_port -tAc \"SELECT 1 FROM pg_database WHERE datname = 'slipway_test'\" | grep -q 1 || createdb -p $cl_port -O slipway_test slipway_test"
export SLIPWAY_TEST_DATABASE_URL="postgres://slipway_test:slipway_test@127.0.0.1:$cl_port/slipway_test"
export SLIPWAY_REQUIRE_POSTGRES=1

echo "[test] type check" >&2
npx tsc -p tsconfig.json

if [ $# -eq 0 ]; then
  echo "[test] fuzzing the DHCP and TFTP decoders, 1,000,000 inputs each" >&2
  node --disable-warning=ExperimentalWarning src/protocol/fuzz.ts 1000000
fi

echo "[test] node --test" >&2
if [ $# -gt 0 ]; then
  exec node --disable-warning=ExperimentalWarning --test --test-concurrency=2 "$@"
fi
exec node --disable-warning=ExperimentalWarning --test --test-concurrency=2 'src/**/*.test.ts' 'test/**/*.test.ts'
