#!/usr/bin/env bash
# A client moving between nodes: it reads on node 1, goes away, events are
# published on node 1 meanwhile, and it comes back on node 2 with its
# Last-Event-ID — and gets exactly the events it missed.
#
#   bash examples/cluster/demo.sh            (needs Redis at 127.0.0.1:6379 and curl)
#
# SPOUT (the binary; default: cargo's release build), CONFIG1/CONFIG2,
# PORT1/PORT2 may be set to run it elsewhere (the test suite does).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CONFIG1="${CONFIG1:-$here/node1.toml}"
CONFIG2="${CONFIG2:-$here/node2.toml}"
PORT1="${PORT1:-8081}"
PORT2="${PORT2:-8082}"
if [ -z "${SPOUT:-}" ]; then
    (cd "$here/../.." && cargo build --release --quiet)
    SPOUT="$here/../../target/release/spout"
fi
tmp="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

"$SPOUT" serve --config "$CONFIG1" --listen "127.0.0.1:$PORT1" 2>"$tmp/node1.log" & pids+=($!)
"$SPOUT" serve --config "$CONFIG2" --listen "127.0.0.1:$PORT2" 2>"$tmp/node2.log" & pids+=($!)
for port in "$PORT1" "$PORT2"; do
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "node on $port not ready"; cat "$tmp"/node*.log; exit 1; }
done
echo "two nodes ready on :$PORT1 and :$PORT2"

topic="demo-$$"
publish() { # PORT TEXT
    curl -sf -X POST "http://127.0.0.1:$1/publish" -H 'content-type: application/json' \
        -d "{\"topic\":\"$topic\",\"data\":\"$2\"}" >/dev/null
}

curl -sN "http://127.0.0.1:$PORT1/events?topic=$topic" >"$tmp/first.txt" & reader=$!
for _ in $(seq 100); do grep -q connected "$tmp/first.txt" && break; sleep 0.05; done
for i in 1 2 3; do publish "$PORT1" "event $i"; done
for _ in $(seq 100); do [ "$(grep -c '^id:' "$tmp/first.txt")" -ge 3 ] && break; sleep 0.05; done
kill "$reader"; wait "$reader" 2>/dev/null || true
last="$(grep '^id:' "$tmp/first.txt" | tail -1 | cut -d' ' -f2)"
echo "client read 3 events on node 1 (last id $last) and disconnected"

for i in 4 5 6; do publish "$PORT1" "event $i"; done
echo "3 more events published on node 1 while it was away"

curl -sN --max-time 2 -H "Last-Event-ID: $last" "http://127.0.0.1:$PORT2/events?topic=$topic" >"$tmp/second.txt" || true
got="$(grep '^data:' "$tmp/second.txt" | grep -v '"connection"' | sed 's/^data: //' | tr '\n' ',')"
echo "client came back on node 2 with Last-Event-ID $last and received: $got"
if [ "$got" = "event 4,event 5,event 6," ]; then
    echo "moved: received 3 missed events exactly once"
else
    echo "unexpected: $got"; exit 1
fi
