#!/usr/bin/env bash
# End-to-end benchmarks of the performance issue, each printing its figures:
#   w1       backlog: EVENTS (1,000,000) seed-style events of 750-900 bytes pre-written across
#            8 files (4 services x 2 pods); at-forwarder starts with read_from_head and empty
#            state; timed until the counting-only receiver (`receiver --sink`) holds every
#            distinct id. events/s, MB/s, user+sys CPU-s per million events (/proc), peak RSS.
#   ceiling  the same bytes posted by a trivial client (examples/ceiling.rs) to the same
#            receiver: the loopback ceiling W1 is compared with.
#   w2       live: 8 files, RATE (20,000) events/s for SECS (60) s, rename rotation every
#            100,000 lines per file; CPU % of one core, peak RSS, latency p50/p99 from
#            eventTime to receipt, lost events (must be 0).
#            PERF=FILE records a system-wide profile during W1 or W2 (perf record -g -a).
#            MEMORY_LIMIT=SIZE sets the buffer's memory_limit_size (0: every chunk to disk).
#            THREADS=1 prints W1's CPU seconds per forwarder thread; TIMELINE=1 prints,
#            every poll, the machine's busy share, the forwarder's and the receiver's CPU
#            (cores), lines read, events received and chunks queued and in flight.
#   w3       idle: FILES (2,000) tracked files, no writes, for SECS (60) s: CPU %, RSS.
#
#   scripts/bench-e2e.sh                  # w1 and ceiling, compress none
#   COMPRESS=gzip scripts/bench-e2e.sh w1
#   COPY=2 scripts/bench-e2e.sh w1        # @type copy to 2 stores (both to the receiver),
#                                         # timed until it holds COPY x EVENTS events
#   scripts/bench-e2e.sh w2 w3
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-1000000}
COMPRESS=${COMPRESS:-none}
RATE=${RATE:-20000}
SECS=${SECS:-60}
FILES=${FILES:-2000}
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(w1 ceiling)
cargo build --release --quiet --example ceiling
cargo build --release --quiet
# AT_BIN: the forwarder to measure (another build, for A/B runs); the receiver and the
# generator are always this tree's.
TOOL=$PWD/target/release/at-forwarder
BIN=${AT_BIN:-$TOOL}
CEILING=$PWD/target/release/examples/ceiling
dir=$(mktemp -d)
cleanup() { kill "${fpid:-}" "${rpid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sink() { curl -sf "http://127.0.0.1:$rport/sink"; }
# Polled every 0.1 s while the forwarder runs: curl + sed only (a Python start-up per poll
# took a fifth of this 2-core machine's CPU from the processes measured).
distinct() { sink | sed -nE 's/.*"distinct":([0-9]+).*/\1/p'; }
# With COPY, every store delivers each event once: the total, over the number of stores.
received() {
  if [ "${COPY:-1}" -gt 1 ]; then
    echo $(( $(sink | sed -nE 's/.*"events":([0-9]+).*/\1/p') / COPY ))
  else
    distinct
  fi
}
python3() { /usr/bin/python3 "$@"; }

# The receiver (sink mode) and the services' Secret, shared by every workload.
mkdir -p "$dir/secrets"
services=$(for s in 0 1 2 3; do printf '{"service_name":"svc-%s","auth_token_value":"t%s","project_id":"p%s"},' $s $s $s; done)
echo "{\"services\":[${services%,}]}" > "$dir/secrets/127.0.0.1"
start_receiver() {
  kill "${rpid:-}" 2>/dev/null || true; wait "${rpid:-}" 2>/dev/null || true
  rport=$(free_port)
  "$TOOL" --log-level warn receiver --sink --sink-latency --listen "127.0.0.1:$rport" \
    --secrets-dir "$dir/secrets" --data-dir "$dir/receiver-$rport" >/dev/null 2>&1 &
  rpid=$!
  until curl -sf "http://127.0.0.1:$rport/healthz" >/dev/null; do sleep 0.05; done
}

# at_output STATE_DIR SUFFIX: the Activity Tracker output to the receiver, its buffer in
# STATE_DIR/bufferSUFFIX.
at_output() {
  cat <<OUT
  @type ibmactivitytracker
  targetHost http://127.0.0.1:$rport
  service_region ng
  secrets_path $dir/secrets
  compress $COMPRESS
  <buffer>
    path $1/buffer$2
    chunk_limit_size 1m
    total_limit_size 800m
    flush_interval 1s
    flush_thread_count 2${MEMORY_LIMIT:+
    memory_limit_size $MEMORY_LIMIT}
  </buffer>
OUT
}

# output_section STATE_DIR: one Activity Tracker output, or with COPY=N a copy to N of them.
output_section() {
  if [ "${COPY:-1}" -le 1 ]; then at_output "$1" ""; return; fi
  echo "  @type copy"
  for i in $(seq 1 "$COPY"); do echo "  <store>"; at_output "$1" "-$i"; echo "  </store>"; done
}

# start_forwarder LOGS_DIR STATE_DIR: at-forwarder tailing LOGS_DIR/**/*.log into the receiver.
start_forwarder() {
  local logs=$1 state=$2
  mkdir -p "$state"
  cat > "$state/at.conf" <<CONF
<source>
  @type tail
  path $logs/**/*.log
  pos_file $state/at.pos
  tag kubernetes.at.*
  format json
  read_from_head true
</source>
<match kubernetes.at.**>
$(output_section "$state")
</match>
CONF
  mport=$(free_port)
  "$BIN" --log-level warn run -c "$state/at.conf" --metrics-listen "127.0.0.1:$mport" 2>"$state/forwarder.log" &
  fpid=$!
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
TCK=$(getconf CLK_TCK)

w1_files() {
  [ -d "$dir/w1" ] || "$TOOL" generate --dir "$dir/w1" --rate 1000000000 --services 4 --pods 2 --count "$EVENTS" --wide >/dev/null
}

w1() {
  w1_files
  local bytes; bytes=$(cat "$dir"/w1/*/*.log | wc -c)
  start_receiver
  local t0; t0=$(date +%s.%N)
  start_forwarder "$dir/w1" "$dir/state-w1"
  if [ -n "${PERF:-}" ]; then perf record -q -F 999 -g -a -o "$PERF" 2>"$dir/perf.err" & ppid=$!; fi
  local distinct=0 t99=
  [ -z "${TIMELINE:-}" ] || echo "  s      busy  fwd-CPU recv-CPU  lines-read  received  queued in-flight"
  while [ "$distinct" -lt "$EVENTS" ]; do
    sleep 0.1
    distinct=$(received)
    kill -0 "$fpid" 2>/dev/null || { echo "forwarder died:"; tail "$dir/state-w1/forwarder.log"; exit 1; }
    [ -n "$t99" ] || [ $((distinct * 100)) -lt $((EVENTS * 99)) ] || t99=$(date +%s.%N)
    [ -z "${TIMELINE:-}" ] || timeline "$t0" "$distinct"
  done
  local t1; t1=$(date +%s.%N)
  if [ -n "${ppid:-}" ]; then kill -TERM "$ppid"; wait "$ppid" || true; cat "$dir/perf.err"; ppid=; fi
  python3 - "$EVENTS" "$bytes" "$t0" "$t1" "$(cpu_ticks "$fpid")" "$TCK" "$(hwm_mib "$fpid")" "$COMPRESS" "${t99:-$t1}" <<'PY'
import sys
events, size, t0, t1, ticks, tck, hwm, comp, t99 = sys.argv[1:]
events, size, secs = int(events), int(size), float(t1) - float(t0)
cpu = int(ticks) / int(tck)
print(f"W1 backlog, compress {comp}: {events} events ({size/events:.0f} bytes avg) in {secs:.2f} s")
print(f"  throughput     {events/secs:,.0f} events/s, {size/secs/1e6:.1f} MB/s")
print(f"  forwarder CPU  {cpu:.2f} s user+sys = {cpu/events*1e6:.2f} CPU-s per million events")
print(f"  peak RSS       {hwm} MiB")
print(f"  99 % received  after {float(t99) - float(t0):.2f} s")
PY
  echo "  receiver CPU   $(awk -v t="$TCK" '{printf "%.2f", ($14 + $15) / t}' "/proc/$rpid/stat") s (same machine)"
  echo "  minor faults   $(awk '{print $10}' "/proc/$fpid/stat") (forwarder)"
  if [ -n "${THREADS:-}" ]; then thread_cpu "$fpid"; fi
  kill "$fpid"; wait "$fpid" 2>/dev/null || true; fpid=
}

# One line of W1's timeline (TIMELINE=1): the machine's busy share and each process's CPU
# ticks since the last line, lines read, events received, chunks queued and in flight.
timeline() {
  local now cpu fcpu rcpu m
  now=$(date +%s.%N)
  cpu=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  fcpu=$(cpu_ticks "$fpid"); rcpu=$(cpu_ticks "$rpid")
  m=$(curl -sf "http://127.0.0.1:$mport/metrics" | awk '
    /^at_forwarder_read_lines_total/ {r=$2}
    /^at_forwarder_buffer_chunks.*"queued"/ {q+=$2}
    /^at_forwarder_buffer_chunks.*"in_flight"/ {f+=$2}
    END {print r+0, q+0, f+0}')
  if [ -n "${tl_prev:-}" ]; then
    # previous: busy idle fwd recv time; now: busy idle fwd recv read queued in-flight time
    echo "$tl_prev $cpu $fcpu $rcpu $m $now $1 $2" | awk -v tck="$TCK" '{
      busy = $6 - $1; idle = $7 - $2; secs = $13 - $5;
      printf "  %-6.2f %3.0f%%  %6.2f   %6.2f  %10d  %8d  %6d %6d\n", $13 - $14,
        100 * busy / (busy + idle + 0.001), ($8 - $3) / tck / secs, ($9 - $4) / tck / secs,
        $10, $15, $11, $12 }'
  fi
  tl_prev="$cpu $fcpu $rcpu $now"
}

# CPU seconds of each of a process's threads, grouped by name (THREADS=1): which one is
# busy all along.
thread_cpu() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(cat "$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
  done | awk -v t="$TCK" '{n[$1]++; s[$1]+=$2; if ($2 > m[$1]) m[$1]=$2}
    END {for (k in n) printf "  thread %-16s x%-3d %.2f s (busiest %.2f s)\n", k, n[k], s[k]/t, m[k]/t}'
}

ceiling() {
  w1_files
  start_receiver
  "$CEILING" "http://127.0.0.1:$rport" t0 p0 "$dir"/w1/*/*.log
}

w2() {
  start_receiver
  mkdir -p "$dir/w2"
  start_forwarder "$dir/w2" "$dir/state-w2"
  sleep 1
  local c0; c0=$(cpu_ticks "$fpid")
  if [ -n "${PERF:-}" ]; then perf record -q -F 999 -g -a -o "$PERF" 2>"$dir/perf.err" & ppid=$!; fi
  "$TOOL" generate --dir "$dir/w2" --rate "$RATE" --services 4 --pods 2 --rotate-every 100000 \
    --duration "${SECS}s" --wide > "$dir/w2-generated.txt"
  local c1; c1=$(cpu_ticks "$fpid")
  if [ -n "${ppid:-}" ]; then kill -TERM "$ppid"; wait "$ppid" || true; ppid=; fi
  local written; written=$(grep -o '[0-9]* events' "$dir/w2-generated.txt" | head -1 | cut -d' ' -f1)
  local deadline=$((SECONDS + 60)) distinct=0
  while [ "$distinct" -lt "$written" ] && [ $SECONDS -lt $deadline ]; do
    sleep 0.2; distinct=$(distinct)
  done
  local totals; totals=$(sink)
  python3 - "$written" "$distinct" "$c0" "$c1" "$TCK" "$SECS" "$(hwm_mib "$fpid")" "$totals" "$RATE" <<'PY'
import json, sys
written, distinct, c0, c1, tck, secs, hwm, totals, rate = sys.argv[1:]
lat = json.loads(totals).get("latency_ms", {})
cpu = (int(c1) - int(c0)) / int(tck) / float(secs) * 100
print(f"W2 live: {rate} events/s for {secs} s in 8 files, rename rotation every 100,000 lines")
print(f"  forwarder CPU  {cpu:.1f} % of one core while writing")
print(f"  peak RSS       {hwm} MiB")
print(f"  latency        p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, max {lat.get('max')} ms (eventTime to receipt)")
print(f"  delivered      {distinct} of {written} ({int(written) - int(distinct)} lost)")
PY
  kill "$fpid"; wait "$fpid" 2>/dev/null || true; fpid=
}

w3() {
  start_receiver
  mkdir -p "$dir/w3"
  python3 - "$dir/w3" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"svc-{i % 4}", f"pod-{i // 4 % 50}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.log"), "w") as f:
        f.write('{"meta":{"serviceProviderName":"svc-%d","userAccountIds":["a"]},"payload":{"id":"idle-%d","action":"svc.x.read","outcome":"success","initiator":{"id":"u","typeURI":"t"},"target":{"id":"t","typeURI":"x/y"},"eventTime":"2026-11-22T05:00:00Z"}}\n' % (i % 4, i))
PY
  start_forwarder "$dir/w3" "$dir/state-w3"
  local distinct=0 deadline=$((SECONDS + 120))
  while [ "$distinct" -lt "$FILES" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; distinct=$(distinct); done
  sleep 5
  local c0; c0=$(cpu_ticks "$fpid")
  sleep "$SECS"
  local c1; c1=$(cpu_ticks "$fpid")
  python3 - "$FILES" "$c0" "$c1" "$TCK" "$SECS" "$(rss_mib "$fpid")" "$(hwm_mib "$fpid")" <<'PY'
import sys
files, c0, c1, tck, secs, rss, hwm = sys.argv[1:]
cpu = (int(c1) - int(c0)) / int(tck) / float(secs) * 100
print(f"W3 idle: {files} tracked files, no writes, {secs} s")
print(f"  forwarder CPU  {cpu:.2f} % of one core")
print(f"  RSS            {rss} MiB (peak {hwm} MiB, including reading them once)")
PY
  kill "$fpid"; wait "$fpid" 2>/dev/null || true; fpid=
}

for w in "${workloads[@]}"; do
  case "$w" in
    w1|w2|w3|ceiling) "$w" ;;
    all) w1; ceiling; w2; w3 ;;
    *) echo "unknown workload $w (w1, ceiling, w2, w3, all)" >&2; exit 2 ;;
  esac
done
