#!/usr/bin/env bash
# Loads kmsd with decrypt-datakey for a long run (default 10 minutes) and samples its
# resident set every 30 s, to check that memory stays flat. Prints one line per sample
# and the kmsbench table at the end. Not part of the test suite.
#   scripts/soak.sh [DURATION]      for example scripts/soak.sh 10m
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

duration=${1:-10m}
ensure_go
ensure_softhsm
mkdir -p bin
go build -o bin/kmsd ./cmd/kmsd
go build -o bin/kmsbench ./cmd/kmsbench

bin/kmsbench --kmsd bin/kmsd --duration "$duration" --rounds 1 --ops decrypt-datakey --skip-single --skip-ceiling &
bench=$!

start=$(date +%s)
while kill -0 "$bench" 2>/dev/null; do
	sleep 30
	for pid in $(pgrep -P "$bench" -x kmsd || true); do
		rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
		echo "t=$(( $(date +%s) - start ))s kmsd_rss_kib=$rss"
	done
done
wait "$bench"
