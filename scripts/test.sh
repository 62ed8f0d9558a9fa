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

echo "== go test (SQLite, and PostgreSQL in the store and process tests)"
go test -race -count=1 -timeout 30m ./...

echo "== HTTP test suite on PostgreSQL"
KMS_TEST_BACKEND=postgres go test -race -count=1 -timeout 20m ./service/api

if [ -f compat/go.mod ]; then
	echo "== compatibility module (official Huawei Cloud Go SDK) on SQLite"
	(cd compat && go vet ./... && go test -count=1 -timeout 20m ./...)

	if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
		echo "== compatibility module on PostgreSQL"
		db="kms_compat_$$"
		createdb -h 127.0.0.1 -U postgres "$db"
		trap 'dropdb -h 127.0.0.1 -U postgres --if-exists "$db"' EXIT
		(cd compat && KMS_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db?sslmode=disable" \
			go test -count=1 -timeout 20m ./...)
	elif [ -n "${CI:-}" ]; then
		echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2
		exit 1
	fi
fi
