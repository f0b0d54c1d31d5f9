#!/usr/bin/env bash
# cpu-pair.sh OLD NEW "BENCH ARGS" ROUNDS [SERVE ARGS]: like bench-pair.sh, and
# also the server's CPU time per request (utime+stime from /proc/PID/stat
# around each client run, divided by the requests served), which a loaded
# machine scatters less than requests per second. Servers on CPU 0 (SERVE
# ARGS, default `--threads 1`), client on CPU 1, rounds alternating.
set -euo pipefail
old=$1 new=$2 shape=$3 rounds=$4 sargs=${5:---threads 1}
po=$((20000 + RANDOM % 10000)) pn=$((30000 + RANDOM % 10000))
# shellcheck disable=SC2086  # SERVE ARGS are words
taskset -c 0 "$old" serve $sargs --addr 127.0.0.1:$po >/dev/null 2>&1 & so=$!
# shellcheck disable=SC2086
taskset -c 0 "$new" serve $sargs --addr 127.0.0.1:$pn >/dev/null 2>&1 & sn=$!
trap 'kill -INT $so $sn 2>/dev/null; wait 2>/dev/null' EXIT
sleep 0.5
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
run() { # bin port pid
  local t0 t1 req
  t0=$(ticks $3)
  # shellcheck disable=SC2086  # BENCH ARGS are words
  req=$(taskset -c 1 "$1" bench --threads 1 $shape --json "127.0.0.1:$2" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['succeeded'], d['requests_per_sec'])")
  t1=$(ticks $3)
  echo "$req $((t1 - t0))"
}
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 0 ]; then o=$(run "$old" $po $so); n=$(run "$new" $pn $sn)
  else n=$(run "$new" $pn $sn); o=$(run "$old" $po $so); fi
  echo "$r old $o new $n"
done | tee /dev/stderr | HZ=$(getconf CLK_TCK) python3 -c '
import os, statistics, sys
rows = [l.split() for l in sys.stdin if l.strip()]
hz = int(os.environ["HZ"])
def us(req, t): return int(t) * 1e6 / hz / int(req)
old = [us(r[2], r[4]) for r in rows]; new = [us(r[6], r[8]) for r in rows]
ro = [float(r[3]) for r in rows]; rn = [float(r[7]) for r in rows]
print("server CPU us/request median: old %.3f new %.3f; ratio new/old %.3f; req/s median old %.0f new %.0f"
      % (statistics.median(old), statistics.median(new), statistics.median(new)/statistics.median(old), statistics.median(ro), statistics.median(rn)))'
