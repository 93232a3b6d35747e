#!/usr/bin/env bash
# Stop local Kafka, Cassandra and the schema registry (SIGTERM, then SIGKILL after BLINK_STOP_TIMEOUT s).
# Usage: ops/down.sh [--wipe]   (--wipe also deletes their data; logs and jar cache are kept)
#        ops/down.sh --cluster [--wipe]   the same for the cluster of ops/cluster.sh only
#        ops/down.sh --secure             the secured servers of ops/secure.sh only (their next up starts afresh)
set -euo pipefail
OPS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ "${1:-}" == --cluster ]]; then exec "$OPS/cluster.sh" down "${2:-}"; fi
if [[ "${1:-}" == --secure ]]; then exec "$OPS/secure.sh" down; fi
case "${1:-}" in ""|--wipe) ;; *) echo "usage: $0 [--wipe]" >&2; exit 2 ;; esac
# stop both at once (Cassandra drains on SIGTERM, which takes a few seconds)
"$OPS/kafka.sh" stop & k=$!
"$OPS/cassandra.sh" stop & c=$!
"$OPS/registry.sh" stop & r=$!
rc=0; wait $k || rc=1; wait $c || rc=1; wait $r || rc=1
if [[ "${1:-}" == "--wipe" ]]; then
  "$OPS/kafka.sh" wipe
  "$OPS/cassandra.sh" wipe
  "$OPS/registry.sh" wipe
fi
exit $rc
