#!/usr/bin/env bash
# Sets up everything and starts Slipway on its embedded default: SQLite, all data in
# ./var, HTTPS on 127.0.0.1:8443. Safe to run again; extra arguments go to `slipway up`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec bin/slipway up --data "${SLIPWAY_DATA:-./var}" "$@"
