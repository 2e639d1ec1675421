#!/usr/bin/env bash
# `make demo`: a local cluster, every example end to end, the results, then stop.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/.venv/bin
export DFARM_HOME=${DFARM_DEMO_HOME:-$(mktemp -d /tmp/dfarm-demo.XXXXXX)}
RESULTS=${DFARM_DEMO_RESULTS:-$ROOT/demo-results}
rm -rf "$RESULTS" && mkdir -p "$RESULTS"

"$BIN/dfarm" up --workers 2 --slots 1 --home "$DFARM_HOME" &
UP=$!
trap 'kill -TERM $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT
for _ in $(seq 200); do
    grep -q token "$DFARM_HOME/access.json" 2>/dev/null && break
    sleep 0.1
done
for _ in $(seq 100); do
    [ "$("$BIN/dstat" --json | grep -c '"name"')" -ge 2 ] && break
    sleep 0.1
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cd "$ROOT/submit_examples"
step "dstat: the workers"
"$BIN/dstat"
step "hello.sub: a hello job"
"$BIN/dsub" --wait --per-job --dest "$RESULTS" hello.sub
cat "$RESULTS"/1.0/stdout
step "dataset.sub: statistics of a CSV file (seed format)"
"$BIN/dsub" --wait --per-job --dest "$RESULTS" dataset.sub
cat "$RESULTS"/2.0/stdout
step "pi.sub: pi to 10,000 digits, output, error and log paths as in HTCondor"
"$BIN/dsub" --wait pi.sub
head -c 80 pi.out && echo " ..."
mv pi.out pi.err pi.log pi-digits.txt "$RESULTS"/
step "fail.sub: a failing job (its stderr and exit code come back)"
"$BIN/dsub" --wait --dest "$RESULTS" fail.sub || echo "(dsub exits 1 because the job failed, as expected)"
step "sweep.sub: queue 10 on two slots"
cluster=$("$BIN/dsub" --quiet sweep.sub)
"$BIN/dq"
echo "(waiting through the Python API)"
"$BIN/python" -c "
import sys
from control_node import Client
with Client() as client:
    client.wait([f'$cluster.{i}' for i in range(10)], timeout=120)
"
"$BIN/dfetch" --per-job --dest "$RESULTS" "$cluster"
cat "$RESULTS/$cluster".*/stdout
step "dq --all: everything that ran"
"$BIN/dq" --all
step "montecarlo.sub: 100 runs with a normal random load, summarized by dresults"
cluster=$("$BIN/dsub" --quiet montecarlo.sub)
"$BIN/dwait" --no-fetch "$cluster" > /dev/null
"$BIN/dresults" "$cluster" --summary --plot "$RESULTS/montecarlo.png"
step "grid.sub: a grid sweep from a file"
cluster=$("$BIN/dsub" --quiet grid.sub)
"$BIN/dwait" --no-fetch "$cluster" > /dev/null
"$BIN/dresults" "$cluster" | tee "$RESULTS/grid.txt"
step "map_primes.py: a Python function over a list with Client.map"
"$BIN/python" map_primes.py | tee "$RESULTS/map_primes.txt"
step "done: results are in $RESULTS"
