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

# TLS for the test cluster: a test CA (in var/, ignored by git) and a server certificate for
# "localhost" that it signs, made again when missing or within 30 days of expiring. The
# server's copy lives beside the cluster's configuration, owned by postgres (the server
# refuses a key others can read), so it is there before the cluster starts.
tls_dir=$(pwd)/var/test-postgres-tls
conf_dir=/etc/postgresql/$cl_version/$cl_name
if ! openssl x509 -checkend 2592000 -noout -in "$tls_dir/server.crt" >/dev/null 2>&1 \
  || ! openssl verify -CAfile "$tls_dir/ca.crt" "$tls_dir/server.crt" >/dev/null 2>&1; then
  echo "[test] making a test CA and a server certificate for PostgreSQL in $tls_dir" >&2
  rm -rf "$tls_dir" && mkdir -p "$tls_dir" && chmod 700 "$tls_dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=Slipway test PostgreSQL CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$tls_dir/ca.key" -out "$tls_dir/ca.crt" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$tls_dir/server.key" -out "$tls_dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > "$tls_dir/server.ext"
  openssl x509 -req -in "$tls_dir/server.csr" -CA "$tls_dir/ca.crt" -CAkey "$tls_dir/ca.key" -CAcreateserial -days 825 \
    -extfile "$tls_dir/server.ext" -out "$tls_dir/server.crt" 2>/dev/null
  chmod 600 "$tls_dir"/*.key
  chmod 644 "$tls_dir/ca.crt" "$tls_dir/server.crt"
fi
as_root install -o postgres -g postgres -m 0644 "$tls_dir/server.crt" "$conf_dir/slipway-test-server.crt"
as_root install -o postgres -g postgres -m 0600 "$tls_dir/server.key" "$conf_dir/slipway-test-server.key"

if [ "$cl_status" != online ]; then as_root pg_ctlcluster "$cl_version" "$cl_name" start; fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$cl_port" && break; sleep 0.5; done
# ALTER SYSTEM writes postgresql.auto.conf, so running this again changes nothing; a reload
# picks up TLS settings without a restart. Plain connections keep working alongside.
for setting in "ssl_cert_file = '$conf_dir/slipway-test-server.crt'" "ssl_key_file = '$conf_dir/slipway-test-server.key'" "ssl = on"; do
  as_postgres "psql -q -p $cl_port -v ON_ERROR_STOP=1 -c \"ALTER SYSTEM SET $setting\"" >/dev/null
done
as_postgres "psql -q -p $cl_port -tAc 'SELECT pg_reload_conf()'" >/dev/null
as_postgres "psql -q -p $cl_port -v ON_ERROR_STOP=1 -c \"DO \\\$\\\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'slipway_test') THEN
    CREATE ROLE slipway_test LOGIN PASSWORD 'slipway_test';
  END IF; END \\\$\\\$;\"" >/dev/null
as_postgres "psql -q -p $cl_port -tAc \"SELECT 1 FROM pg_database WHERE datname = 'slipway_test'\" | grep -q 1 || createdb -p $cl_port -O slipway_test slipway_test"
export SLIPWAY_TEST_DATABASE_URL="postgres://slipway_test:slipway_test@127.0.0.1:$cl_port/slipway_test"
export SLIPWAY_TEST_DATABASE_TLS_URL="postgres://slipway_test:slipway_test@localhost:$cl_port/slipway_test?sslmode=verify-full&sslrootcert=$tls_dir/ca.crt"
# The reload is asynchronous: wait until the server answers over TLS, and verifies.
for i in $(seq 1 30); do
  PGCONNECT_TIMEOUT=5 psql -q -tA "$SLIPWAY_TEST_DATABASE_TLS_URL" -c 'SELECT 1' >/dev/null 2>&1 && break
  [ "$i" = 30 ] && { echo "[test] PostgreSQL does not answer over TLS with verify-full: see /var/log/postgresql/" >&2; exit 1; }
  sleep 0.5
done
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
# The longest files first (each deploys emulated machines for several minutes), so they run
# beside the rest rather than after it; then every other test file, in name order.
long=(test/readme-deploy.test.ts test/deploy/deploy.test.ts)
mapfile -t rest < <(find src test -name '*.test.ts' | LC_ALL=C sort | grep -vxF -f <(printf '%s\n' "${long[@]}"))
exec node --disable-warning=ExperimentalWarning --test --test-concurrency=2 "${long[@]}" "${rest[@]}"
