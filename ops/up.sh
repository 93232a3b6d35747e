#!/usr/bin/env bash
# Bring up local Kafka, Cassandra and the schema registry on 127.0.0.1 and wait until each answers. Idempotent.
set -euo pipefail
OPS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$OPS/kafka.sh" fetch
"$OPS/cassandra.sh" fetch
"$OPS/registry.sh" fetch
"$OPS/kafka.sh" start
"$OPS/cassandra.sh" start
"$OPS/registry.sh" start
"$OPS/status.sh"
