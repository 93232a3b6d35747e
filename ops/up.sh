#!/usr/bin/env bash
# Bring up local Kafka + Cassandra on 127.0.0.1 and wait until both answer. Idempotent.
set -euo pipefail
OPS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$OPS/kafka.sh" fetch
"$OPS/cassandra.sh" fetch
"$OPS/kafka.sh" start
"$OPS/cassandra.sh" start
"$OPS/status.sh"
