#!/usr/bin/env bash
# Print the state of local Kafka, Cassandra and the schema registry. Exit 0 only if all are running and ready.
# ops/status.sh --cluster: the same for the cluster of ops/cluster.sh; --secure: for the servers of ops/secure.sh.
OPS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ "${1:-}" == --cluster ]]; then exec "$OPS/cluster.sh" status; fi
if [[ "${1:-}" == --secure ]]; then exec "$OPS/secure.sh" status; fi
rc=0
"$OPS/kafka.sh" status || rc=1
"$OPS/cassandra.sh" status || rc=1
"$OPS/registry.sh" status || rc=1
exit $rc
