#!/usr/bin/env bash
# Measures kmsd against the ceiling server on this machine in one run and prints the
# table that docs/benchmarks.md records. Installs wrk and SoftHSM2 when they are missing.
# Extra arguments go to kmsbench, for example: scripts/bench.sh --duration 30s
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_go
ensure_softhsm
if ! command -v wrk >/dev/null 2>&1; then
	echo "wrk is missing: installing the Debian package wrk" >&2
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
fi

mkdir -p bin
go build -o bin/kmsd ./cmd/kmsd
go build -o bin/kmsbench ./cmd/kmsbench

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version)"
exec bin/kmsbench --kmsd bin/kmsd "$@"
