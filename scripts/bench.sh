#!/usr/bin/env bash
# Runs every benchmark of the release build. Each writes build/bench/<name>.json
# (a flat object of figure -> number) and prints it.
set -euo pipefail
cd "$(dirname "$0")/../build"
mkdir -p bench
status=0
for b in bench/bench_*; do
    [ -x "$b" ] || continue
    echo "== $b"
    "./$b" || status=1
done
exit $status
