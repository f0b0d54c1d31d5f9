#!/usr/bin/env bash
# User-space instructions per request of `gotalk serve`, counted by callgrind:
# a figure the load of the machine does not change (the same binary and
# traffic give the same count, run after run).
#
#   scripts/server-instructions.sh N1 N2 GOTALK [serve args...]
#
# Runs `GOTALK serve --threads 1 [serve args]` under callgrind twice, sends it
# N1 and then N2 requests (64 in flight, 32 B) with `CLIENT bench --threads 1`
# (CLIENT defaults to GOTALK), and prints (total(N2) - total(N1)) / (N2 - N1):
# start-up and shut-down cancel out. LOAD="--conns 1000 -c 1" replaces the
# bench's "-c 64" (e.g. many connections; ulimit -n must allow them).
# WS=1 sends the requests over WebSocket instead (`serve --ws`, the client
# on ws://…/gotalk/). Loopback only; stops by itself.
set -uo pipefail
n1=$1 n2=$2 bin=$3
shift 3
client=${CLIENT:-$bin}
load=${LOAD:--c 64}
# With glibc.malloc.tcache_count set, serve does not restart itself to set
# it (a restart under valgrind would exec valgrind's tool, which refuses).
tunables=${GLIBC_TUNABLES:-glibc.malloc.tcache_count=1}
total() {
  local n=$1
  shift
  local port=$((20000 + RANDOM % 10000)) out
  out=$(mktemp)
  local target="127.0.0.1:$port" ws=() ready=$port
  if [ "${WS:-0}" = 1 ]; then
    ws=(--ws "127.0.0.1:$((port + 1))")
    target="ws://127.0.0.1:$((port + 1))/gotalk/"
    ready=$((port + 1))
  fi
  GLIBC_TUNABLES=$tunables valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" serve --threads 1 \
    --addr "127.0.0.1:$port" "${ws[@]}" "$@" >/dev/null 2>"$out" &
  local pid=$!
  for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$ready") 2>/dev/null && break; sleep 0.1; done
  # shellcheck disable=SC2086
  "$client" bench --threads 1 $load --size 32 -n "$n" "$target" >/dev/null 2>&1
  kill -INT "$pid"
  wait "$pid"
  grep -oP 'Collected : \K[0-9]+' "$out"
  rm -f "$out"
}
[ "${WS:-0}" = 1 ] && ws_label="(ws) "
a=$(total "$n1" "$@")
b=$(total "$n2" "$@")
echo "$bin serve ${ws_label:-}$* ($load): $(( (b - a) / (n2 - n1) )) instructions per request"
