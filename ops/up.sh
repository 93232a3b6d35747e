#!/usr/bin/env bash
# Bring up local Kafka, Cassandra and the schema registry on 127.0.0.1 and wait until each answers. Idempotent.
# ops/up.sh --cluster brings up the three-node Cassandra and three-broker Kafka of ops/cluster.sh instead;
# ops/up.sh --secure the secured Kafka and Cassandra of ops/secure.sh.
set -euo pipefail
OPS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
case "${1:-}" in
  "") ;;
  --cluster) exec "$OPS/cluster.sh" up ;;
  --secure) exec "$OPS/secure.sh" up ;;
  *) echo "usage: $0 [--cluster|--secure]" >&2; exit 2 ;;
esac
"$OPS/kafka.sh" fetch
"$OPS/cassandra.sh" fetch
"$OPS/registry.sh" fetch
"$OPS/kafka.sh" start
"$OPS/cassandra.sh" start
"$OPS/registry.sh" start
"$OPS/status.sh"
