#!/usr/bin/env bash
# Runs kmsd on the embedded default: a SoftHSM2 token and a SQLite file in ./kms-data,
# relative to the directory it is run from, serving on 127.0.0.1:8080. Installs SoftHSM2
# first when it is missing. Any argument is passed to kmsd (see `scripts/run.sh --help`),
# and a relative path in one is taken from the directory it is run from too.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/lib.sh"

ensure_go
ensure_softhsm
mkdir -p "$root/bin"
(cd "$root" && go build -o bin/kmsd ./cmd/kmsd && go build -o bin/kmsctl ./cmd/kmsctl)
exec "$root/bin/kmsd" "$@"
