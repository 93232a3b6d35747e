#!/usr/bin/env bash
# Print the state of local Kafka + Cassandra. Exit 0 only if both are running and ready.
OPS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rc=0
"$OPS/kafka.sh" status || rc=1
"$OPS/cassandra.sh" status || rc=1
exit $rc
