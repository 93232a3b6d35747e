#!/usr/bin/env bash
# Print the state of local Kafka, Cassandra and the schema registry. Exit 0 only if all are running and ready.
OPS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rc=0
"$OPS/kafka.sh" status || rc=1
"$OPS/cassandra.sh" status || rc=1
"$OPS/registry.sh" status || rc=1
exit $rc
