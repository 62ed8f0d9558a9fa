#!/usr/bin/env bash
# Runs every test: formatting and vet checks, the unit and HTTP tests of the service
# (real SoftHSM2 tokens, real SQLite files, real PostgreSQL, real kmsd processes) with
# the race detector, and the compatibility module that drives kmsd through the official
# Huawei Cloud Go SDK. Installs SoftHSM2 and starts PostgreSQL first when needed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_go
ensure_softhsm
ensure_postgres

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "these files need gofmt:" >&2
	echo "$unformatted" >&2
	exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test"
go test -race -count=1 -timeout 30m ./...

if [ -f compat/go.mod ]; then
	echo "== compatibility module (official Huawei Cloud Go SDK)"
	(cd compat && go vet ./... && go test -count=1 -timeout 20m ./...)
fi
