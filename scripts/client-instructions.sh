#!/usr/bin/env bash
# User-space instructions per request of `gotalk bench`, the client, counted
# by callgrind (the count the machine's load does not change).
#
#   scripts/client-instructions.sh N1 N2 GOTALK...
#
# Starts the first GOTALK's `serve --threads 1` (natively, not under
# callgrind), then runs each GOTALK's `bench --threads 1 -c 64 --size 32`
# under callgrind twice, for N1 and N2 requests, and prints
# (total(N2) - total(N1)) / (N2 - N1): start-up and shut-down cancel out.
# LOAD="--conns 100 -c 6" replaces "-c 64". WS=1 sends the requests over
# WebSocket (`serve --ws`, the client on ws://…/gotalk/). Loopback only;
# stops by itself.
set -uo pipefail
n1=$1 n2=$2
shift 2
load=${LOAD:--c 64}
port=$((20000 + RANDOM % 10000))
target="127.0.0.1:$port" ws=() ready=$port
if [ "${WS:-0}" = 1 ]; then
  ws=(--ws "127.0.0.1:$((port + 1))")
  target="ws://127.0.0.1:$((port + 1))/gotalk/"
  ready=$((port + 1))
fi
"$1" serve --threads 1 --addr "127.0.0.1:$port" "${ws[@]}" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null' EXIT
for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$ready") 2>/dev/null && break; sleep 0.1; done
total() {
  # shellcheck disable=SC2086
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" bench --threads 1 $load --size 32 \
    -n "$2" "$target" 2>&1 >/dev/null | grep -oP 'Collected : \K[0-9]+'
}
for bin in "$@"; do
  a=$(total "$bin" "$n1")
  b=$(total "$bin" "$n2")
  echo "$bin bench ${WS:+(ws) }($load): $(((b - a) / (n2 - n1))) instructions per request"
done
