#!/usr/bin/env bash
# A local try in one command, nothing to edit: a receiver standing in for Activity
# Tracker, the Secret its services need, 3 services writing 3,000 events through
# rotations, and at-forwarder with examples/local/at-forwarder.conf between them.
# Usage: examples/local/try.sh [AT_FORWARDER_BINARY]   (default: a release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/at-forwarder}
[ -x "$bin" ] || cargo build --release --locked
export AT_LOCAL=${AT_LOCAL:-$(mktemp -d)}
mkdir -p "$AT_LOCAL/secrets" "$AT_LOCAL/logs" "$AT_LOCAL/data"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT

# The Secret file is named after targetHost's host, as the DaemonSet mounts it.
services=()
for s in 0 1 2; do services+=(--service "svc-$s=token-$s:project-$s"); done
"$bin" encode-services "${services[@]}" --at-host 127.0.0.1 --out-dir "$AT_LOCAL/secrets" >/dev/null

"$bin" receiver --listen 127.0.0.1:9099 --secrets-dir "$AT_LOCAL/secrets" \
  --data-dir "$AT_LOCAL/data" --sink > "$AT_LOCAL/receiver.log" 2>&1 &
pids+=($!)
"$bin" --log-format text run -c examples/local/at-forwarder.conf 2> "$AT_LOCAL/forwarder.log" &
pids+=($!)
"$bin" generate --dir "$AT_LOCAL/logs" --services 3 --pods 2 --rate 1000 --count 3000 --rotate-every 400

for _ in $(seq 1 60); do
  got=$(curl -s http://127.0.0.1:9099/sink | sed -n 's/.*"events":\([0-9]*\).*/\1/p')
  [ "${got:-0}" -ge 3000 ] && break
  sleep 1
done
echo "received ${got:-0} of 3000 events; positions:"
"$bin" positions -c examples/local/at-forwarder.conf
echo "state, logs and the daemon's log: $AT_LOCAL"
[ "${got:-0}" -ge 3000 ]
