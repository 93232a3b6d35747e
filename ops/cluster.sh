#!/usr/bin/env bash
# A local replicated cluster on this one machine, beside the single-node servers of ops/up.sh (which it never
# touches): three Cassandra nodes on 127.0.0.2, 127.0.0.3 and 127.0.0.4 (ports 9042/7000, cluster "blink-cluster",
# 384 MB heaps, ops/conf/cassandra-small.yaml) and three Kafka brokers in KRaft mode, each a combined
# broker+controller of a 3-voter quorum, on 127.0.0.1:19092-19094 (controllers 19192-19194; replication 3,
# min.insync.replicas 2). Each node has its own folder (data, generated config, pid, logs) under
# ops/.run/cluster/<node>, and is run by ops/cassandra.sh or ops/kafka.sh with that folder as BLINK_OPS_DIR.
#
# Usage: ops/cluster.sh up|down [--wipe]|status
#        ops/cluster.sh {start|stop|kill|status} NODE    NODE: cassandra-1..3, kafka-1..3 (kill = SIGKILL)
#        ops/cluster.sh nodetool N ARGS...               nodetool against cassandra-N
#        ops/cluster.sh env                              the client settings of the cluster (BLINK_* lines)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CLUSTER_DIR="$RUN_DIR/cluster"
NODES=(1 2 3)
CASSANDRA_CLUSTER_HEAP="${BLINK_CLUSTER_CASSANDRA_HEAP:-384M}"
KAFKA_CLUSTER_HEAP="${BLINK_CLUSTER_KAFKA_HEAP:-256m}"
KAFKA_CLUSTER_PORT0=19091        # broker N on 19091+N, its controller on 19191+N
cassandra_host() { echo "127.0.0.$(($1 + 1))"; }
kafka_port() { echo $((KAFKA_CLUSTER_PORT0 + $1)); }
kafka_controller_port() { echo $((KAFKA_CLUSTER_PORT0 + 100 + $1)); }
CASSANDRA_SEEDS="127.0.0.2:7000,127.0.0.3:7000,127.0.0.4:7000"
KAFKA_VOTERS="1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194"
KAFKA_BOOTSTRAP="127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"

# export_node_env NODE: the environment under which ops/cassandra.sh or ops/kafka.sh runs that node
export_node_env() {
  local node="$1" n="${1##*-}"
  export BLINK_OPS_DIR="$CLUSTER_DIR/$node"
  case "$node" in
    cassandra-[123])
      export BLINK_OPS_HOST BLINK_CASSANDRA_PORT=9042 BLINK_CASSANDRA_STORAGE_PORT=7000 \
        BLINK_CASSANDRA_JMX_PORT=$((7200 + n)) BLINK_CASSANDRA_HEAP="$CASSANDRA_CLUSTER_HEAP" \
        BLINK_CASSANDRA_CLUSTER_NAME=blink-cluster BLINK_CASSANDRA_SEEDS="$CASSANDRA_SEEDS" \
        BLINK_CASSANDRA_EXTRA_CONF="$OPS_HOME/conf/cassandra-small.yaml" \
        BLINK_CASSANDRA_JVM_OPTS="-Dblink.node=$node -XX:MaxDirectMemorySize=256m -XX:CICompilerCount=2 -XX:ConcGCThreads=1"
      BLINK_OPS_HOST="$(cassandra_host "$n")"
      ;;
    kafka-[123])
      export BLINK_KAFKA_PORT BLINK_KAFKA_CONTROLLER_PORT BLINK_KAFKA_NODE_ID="$n" BLINK_KAFKA_VOTERS="$KAFKA_VOTERS" \
        BLINK_KAFKA_REPLICATION=3 BLINK_KAFKA_MIN_ISR=2 BLINK_KAFKA_HEAP="$KAFKA_CLUSTER_HEAP"
      BLINK_KAFKA_PORT="$(kafka_port "$n")"; BLINK_KAFKA_CONTROLLER_PORT="$(kafka_controller_port "$n")"
      ;;
    *) die "unknown node $node (cassandra-1..3, kafka-1..3)" ;;
  esac
}

node_cmd() {  # node_cmd NODE SUBCOMMAND...: ops/cassandra.sh or ops/kafka.sh for that node
  (export_node_env "$1"; "$OPS_HOME/${1%-*}.sh" "${@:2}")
}

node_pid() { (BLINK_OPS_DIR="$CLUSTER_DIR/$1"; PID_DIR="$BLINK_OPS_DIR/pids"; pid_of "${1%-*}"); }

kill_node() {  # SIGKILL, as a machine that dies: no drain, no flush
  local pid
  pid="$(node_pid "$1")" || { log "$1: not running"; return 0; }
  log "$1: SIGKILL pid $pid"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
}

ready_cassandra() {  # every node answers a query itself and sees three NORMAL nodes in gossip
  local n
  for n in "${NODES[@]}"; do
    "$PYTHON" "$OPS_HOME/wait_ready.py" cassandra --host "$(cassandra_host "$n")" --nodes 3 \
      --timeout "$1" "${@:2}" || return 1
  done
}

ready_kafka() {  # every broker answers a metadata request listing three brokers
  local n
  for n in "${NODES[@]}"; do
    "$PYTHON" "$OPS_HOME/wait_ready.py" kafka --port "$(kafka_port "$n")" --nodes 3 --timeout "$1" "${@:2}" || return 1
  done
}

cluster_up() {
  local t0 n pids=() rc=0
  t0=$(date +%s)
  "$OPS_HOME/kafka.sh" fetch
  "$OPS_HOME/cassandra.sh" fetch
  # Kafka: the three at once (a broker is ready only once a quorum of controllers is up)
  for n in "${NODES[@]}"; do node_cmd "kafka-$n" start & pids+=($!); done
  for n in "${pids[@]}"; do wait "$n" || rc=1; done
  (( rc == 0 )) || die "a Kafka broker did not start (logs: $CLUSTER_DIR/kafka-N/logs)"
  # Cassandra: one node after the other (joining nodes gossip with the running ones; also spares the 2 cores)
  for n in "${NODES[@]}"; do node_cmd "cassandra-$n" start; done
  ready_kafka 60 || die "the Kafka brokers do not list three brokers"
  ready_cassandra 120 || die "the Cassandra nodes do not see each other"
  log "cluster: up in $(( $(date +%s) - t0 ))s"
  cluster_status
}

cluster_down() {
  local node pids=() rc=0
  for node in cassandra-{1,2,3} kafka-{1,2,3}; do node_cmd "$node" stop & pids+=($!); done
  for node in "${pids[@]}"; do wait "$node" || rc=1; done
  if [[ "${1:-}" == --wipe ]]; then
    for node in cassandra-{1,2,3} kafka-{1,2,3}; do node_cmd "$node" wipe; done
  fi
  return $rc
}

cluster_status() {  # exit 0 only if all six nodes run and answer, each seeing the whole cluster
  local node rc=0
  for node in cassandra-{1,2,3} kafka-{1,2,3}; do
    printf '%s: ' "$node"; node_cmd "$node" status || rc=1
  done
  if (( rc == 0 )); then
    ready_cassandra 10 --quiet && ready_kafka 10 --quiet || rc=1
    (( rc == 0 )) && echo "cluster: ready (Cassandra 127.0.0.2-4:9042, Kafka $KAFKA_BOOTSTRAP)"
  fi
  (( rc == 0 )) || echo "cluster: NOT ready"
  return $rc
}

cluster_env() {  # what a worker or test needs to use the cluster (replication 3, QUORUM, min.insync.replicas 2)
  cat <<EOF
BLINK_CASSANDRA_HOSTS=127.0.0.2,127.0.0.3,127.0.0.4
BLINK_CASSANDRA_REPLICATION_FACTOR=3
BLINK_CASSANDRA_CONSISTENCY=QUORUM
BLINK_KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP
BLINK_KAFKA_REPLICATION_FACTOR=3
BLINK_KAFKA_MIN_INSYNC_REPLICAS=2
EOF
}

case "${1:-}" in
  up) cluster_up ;;
  down) cluster_down "${2:-}" ;;
  status) if [[ -n "${2:-}" ]]; then node_cmd "$2" status; else cluster_status; fi ;;
  start|stop) [[ -n "${2:-}" ]] || die "usage: $0 $1 NODE"; node_cmd "$2" "$1" ;;
  kill) [[ -n "${2:-}" ]] || die "usage: $0 kill NODE"; kill_node "$2" ;;
  nodetool) [[ -n "${2:-}" ]] || die "usage: $0 nodetool N ARGS..."; n="$2"; shift 2; node_cmd "cassandra-$n" nodetool "$@" ;;
  env) cluster_env ;;
  *) echo "usage: $0 up|down [--wipe]|status [NODE]|start NODE|stop NODE|kill NODE|nodetool N ARGS...|env" >&2; exit 2 ;;
esac
