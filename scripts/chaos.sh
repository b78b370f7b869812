#!/usr/bin/env bash
# The reliability suite (tests/it/chaos.rs), long mode: repeats its cycle — 20 kill -9 under
# 5,000 events/s with rotations, outages (down 30 s, 500, 429, slow, cut connections), a
# token rotation, a full buffer disk, hostile lines — for the given time, in release.
#   scripts/chaos.sh --soak 10m
# Without --soak it runs the short (CI) mode once. Root puts the buffer on a tmpfs.
set -euo pipefail
cd "$(dirname "$0")/.."
soak=""
while [ $# -gt 0 ]; do
  case "$1" in
    --soak) soak="$2"; shift 2 ;;
    *) echo "usage: $0 [--soak 10m]" >&2; exit 2 ;;
  esac
done
export AT_CHAOS_SOAK="$soak"
[ -n "$soak" ] || unset AT_CHAOS_SOAK
exec cargo test --release --locked --test it chaos:: -- --nocapture --test-threads 1
