#!/usr/bin/env bash
# Runs kmsd on the embedded default: a SoftHSM2 token and a SQLite file in ./kms-data,
# serving on 127.0.0.1:8080. Installs SoftHSM2 first when it is missing. Any argument is
# passed to kmsd (see `scripts/run.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_go
ensure_softhsm
mkdir -p bin
go build -o bin/kmsd ./cmd/kmsd
go build -o bin/kmsctl ./cmd/kmsctl
exec bin/kmsd "$@"
