#!/usr/bin/env bash
# Compares two builds of the `gotalk` binary as separate processes: the
# server on CPU 0, the client on CPU 1, one runtime thread each, one server
# per build for the whole run, rounds alternating which build goes first.
#
#   scripts/bench-pair.sh OLD_GOTALK NEW_GOTALK "-c 64 --size 32 --duration 2s" [ROUNDS]
#
# Prints one line per round (req/s, p50 µs, p99 µs of each), then the medians
# and the median of the per-round ratios. Loopback only; stops by itself.
# To judge one side alone: CLIENT=GOTALK runs that build's client against
# both servers (the servers compared), SERVER=GOTALK runs both clients
# against that build's server (the clients compared). NEW_ARGS="..." adds
# arguments to the new side's `serve` and `bench` (the same build twice
# then compares a flag, e.g. NEW_ARGS="--busy-poll 50us"); RAW=1 runs the
# raw baseline instead (`serve --raw-echo`, `bench --raw`).
set -euo pipefail
old=$1 new=$2 shape=$3 rounds=${4:-10}
po=$((20000 + RANDOM % 10000)) pn=$((30000 + RANDOM % 10000))
# `gotalk CMD --threads 1`; builds before 2026-12-01 took `--threads` first.
cmd() {
  if "$1" "$2" --help 2>/dev/null | grep -q -- '--threads'; then echo "$1 $2 --threads 1"
  else echo "$1 --threads 1 $2"; fi
}
raw_serve='' raw_bench=''
if [ "${RAW:-0}" = 1 ]; then raw_serve=--raw-echo raw_bench=--raw; fi
# shellcheck disable=SC2046,SC2086
taskset -c 0 $(cmd "${SERVER:-$old}" serve) $raw_serve --addr 127.0.0.1:$po >/dev/null 2>&1 & so=$!
# shellcheck disable=SC2046,SC2086
taskset -c 0 $(cmd "${SERVER:-$new}" serve) $raw_serve ${NEW_ARGS:-} --addr 127.0.0.1:$pn >/dev/null 2>&1 & sn=$!
trap 'kill -INT $so $sn 2>/dev/null; wait 2>/dev/null' EXIT
sleep 0.5
run() {
  # shellcheck disable=SC2046,SC2086
  taskset -c 1 $(cmd "${CLIENT:-$1}" bench) $raw_bench $shape $3 --json "127.0.0.1:$2" |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(d['requests_per_sec'], d['p50_us'], d['p99_us'])"
}
out=$(for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 0 ]; then o=$(run "$old" $po ""); n=$(run "$new" $pn "${NEW_ARGS:-}")
  else n=$(run "$new" $pn "${NEW_ARGS:-}"); o=$(run "$old" $po ""); fi
  echo "$r old $o new $n"
done)
echo "$out"
echo "$out" | python3 "$(dirname "$0")/pair-medians.py" 2 6
