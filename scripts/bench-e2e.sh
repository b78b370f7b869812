#!/usr/bin/env bash
# End-to-end benchmark W1 (backlog): EVENTS seed-style events pre-written across 8 files
# (4 services × 2 pods), at-forwarder started with read_from_head and empty state, timed
# until the counting-only receiver (`receiver --sink`) holds every distinct id. Reports
# events/s, MB/s, the forwarder's user+sys CPU seconds per million events (/proc) and its
# peak RSS (VmHWM).
#
#   scripts/bench-e2e.sh                 # 1,000,000 events, compress none
#   EVENTS=200000 COMPRESS=gzip scripts/bench-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-1000000}
COMPRESS=${COMPRESS:-none}
cargo build --release --quiet
BIN=$PWD/target/release/at-forwarder
dir=$(mktemp -d)
cleanup() { kill "${fpid:-}" "${rpid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$BIN" generate --dir "$dir/logs" --rate 1000000000 --services 4 --pods 2 --count "$EVENTS" >/dev/null
bytes=$(du -sb "$dir/logs" | cut -f1)
mkdir -p "$dir/secrets" "$dir/receiver"
services=$(for s in 0 1 2 3; do printf '{"service_name":"svc-%s","auth_token_value":"t%s","project_id":"p%s"},' $s $s $s; done)
echo "{\"services\":[${services%,}]}" > "$dir/secrets/127.0.0.1"
rport=$(free_port); mport=$(free_port)
"$BIN" --log-level warn receiver --sink --listen "127.0.0.1:$rport" --secrets-dir "$dir/secrets" --data-dir "$dir/receiver" >/dev/null 2>&1 &
rpid=$!
until curl -sf "http://127.0.0.1:$rport/healthz" >/dev/null; do sleep 0.05; done
cat > "$dir/at.conf" <<CONF
<source>
  @type tail
  path $dir/logs/**/*.log*
  pos_file $dir/state/at.pos
  tag kubernetes.at.*
  format json
  read_from_head true
</source>
<match kubernetes.at.**>
  @type ibmactivitytracker
  targetHost http://127.0.0.1:$rport
  service_region ng
  secrets_path $dir/secrets
  compress $COMPRESS
  <buffer>
    path $dir/state/buffer
    chunk_limit_size 1m
    total_limit_size 800m
    flush_interval 1s
    flush_thread_count 2
  </buffer>
</match>
CONF
mkdir -p "$dir/state"
start=$(date +%s.%N)
"$BIN" --log-level warn run -c "$dir/at.conf" --metrics-listen "127.0.0.1:$mport" 2>"$dir/forwarder.log" &
fpid=$!
distinct=0; tick=0
while [ "$distinct" -lt "$EVENTS" ]; do
  sleep 0.1; tick=$((tick+1)); if [ -n "${TRACE:-}" ] && [ $((tick % 3)) -eq 0 ]; then curl -sf "http://127.0.0.1:$mport/metrics" | grep -E "^at_forwarder_(read_lines_total|events_emitted_total|buffer_chunks|chunks_delivered_total|requests_total)" | tr "\n" " "; echo; fi
  distinct=$(curl -sf "http://127.0.0.1:$rport/sink" | python3 -c 'import json,sys; print(json.load(sys.stdin)["distinct"])')
  kill -0 "$fpid" 2>/dev/null || { echo "forwarder died:"; tail "$dir/forwarder.log"; exit 1; }
done
end=$(date +%s.%N)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$fpid/stat")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$fpid/status")
ticks=$(getconf CLK_TCK)
python3 - "$EVENTS" "$bytes" "$start" "$end" "$utime" "$stime" "$ticks" "$hwm" "$COMPRESS" <<'PY'
import sys
events, size, start, end, ut, st, tck, hwm, comp = sys.argv[1:]
events, size, secs = int(events), int(size), float(end) - float(start)
cpu = (int(ut) + int(st)) / int(tck)
print(f"W1 backlog, compress {comp}: {events} events ({size/events:.0f} bytes avg) in {secs:.2f} s")
print(f"  throughput     {events/secs:,.0f} events/s, {size/secs/1e6:.1f} MB/s")
print(f"  forwarder CPU  {cpu:.2f} s user+sys = {cpu/events*1e6:.2f} CPU-s per million events")
print(f"  peak RSS       {int(hwm)/1024:.1f} MiB")
PY
