#!/usr/bin/env bash
# CPU time of server and client for one bench run, as separate processes:
# `serve --threads 1 [SERVE_ARGS]` on CPU 0, `bench --threads 1 BENCH_ARGS`
# on CPU 1. Shows which side is the limit (the one busy all the time) and
# how much of each side's time is the kernel's.
#
#   scripts/cpu-split.sh GOTALK "BENCH_ARGS" ["SERVE_ARGS"]
#   scripts/cpu-split.sh gotalk "-c 64 --size 32 -n 2000000"
#   scripts/cpu-split.sh gotalk "--raw -c 64 --size 32 -n 2000000" "--raw-echo"
#
# Prints the bench's throughput, the client's user and system seconds and
# wall time (/usr/bin/time), and the server's user and system seconds over
# the run (/proc/PID/stat). Loopback only; stops by itself.
set -uo pipefail
bin=$1 bench_args=$2 serve_args=${3:-}
port=$((24000 + RANDOM % 5000))
# shellcheck disable=SC2086
taskset -c 0 "$bin" serve --threads 1 $serve_args --addr "127.0.0.1:$port" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null' EXIT
for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
read -r su0 ss0 < <(awk '{print $14, $15}' "/proc/$server/stat")
# shellcheck disable=SC2086
out=$({ /usr/bin/time -f "client user %U s, sys %S s, wall %e s" taskset -c 1 "$bin" bench --threads 1 \
  $bench_args "127.0.0.1:$port"; } 2>&1)
read -r su1 ss1 < <(awk '{print $14, $15}' "/proc/$server/stat")
tck=$(getconf CLK_TCK)
echo "$out" | grep -E "throughput|client user"
awk -v u=$((su1 - su0)) -v s=$((ss1 - ss0)) -v t="$tck" \
  'BEGIN { printf "server user %.2f s, sys %.2f s\n", u / t, s / t }'
