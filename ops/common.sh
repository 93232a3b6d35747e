# Shared settings and helpers for ops/*.sh.  Source it, do not run it.
# shellcheck shell=bash

OPS_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ---- versions (keep in sync with docker-compose.yml and ops/maven/*/pom.xml) ----
KAFKA_VERSION="${BLINK_KAFKA_VERSION:-4.1.1}"
CASSANDRA_VERSION="${BLINK_CASSANDRA_VERSION:-5.0.6}"

# ---- ports / hosts ----
BIND_HOST="${BLINK_OPS_HOST:-127.0.0.1}"                 # the address a server listens on (ops/cluster.sh: 127.0.0.2-4)
KAFKA_PORT="${BLINK_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${BLINK_KAFKA_CONTROLLER_PORT:-9093}"
CASSANDRA_PORT="${BLINK_CASSANDRA_PORT:-9042}"
CASSANDRA_STORAGE_PORT="${BLINK_CASSANDRA_STORAGE_PORT:-7000}"

# Fixed KRaft cluster id (same as CLUSTER_ID in docker-compose.yml).
KAFKA_CLUSTER_ID="7YC1sTJ4TbG3SsuKP9ttQQ"

# ---- folders ----
CACHE_DIR="${BLINK_OPS_CACHE:-$OPS_HOME/.cache}"     # downloaded jars (never wiped)
RUN_DIR="${BLINK_OPS_DIR:-$OPS_HOME/.run}"           # data, generated config, pids, logs
LOG_DIR="$RUN_DIR/logs"
PID_DIR="$RUN_DIR/pids"

# ---- timeouts (seconds) ----
KAFKA_READY_TIMEOUT="${BLINK_KAFKA_READY_TIMEOUT:-120}"
CASSANDRA_READY_TIMEOUT="${BLINK_CASSANDRA_READY_TIMEOUT:-180}"
STOP_TIMEOUT="${BLINK_STOP_TIMEOUT:-60}"

PYTHON="${PYTHON:-python3}"
JAVA="${JAVA:-java}"

log() { echo "[ops $(date +%H:%M:%S)] $*" >&2; }
die() { echo "[ops ERROR] $*" >&2; exit 1; }

# maven_fetch NAME VERSION-PROPERTY VERSION  -> copies runtime jars to $CACHE_DIR/NAME-VERSION/lib once
maven_fetch() {
  local name="$1" prop="$2" version="$3"
  local lib="$CACHE_DIR/$name-$version/lib"
  if [[ -f "$lib/.fetched" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (needed once to download $name $version)"
  log "downloading $name $version from Maven Central into $lib"
  rm -rf "$lib"; mkdir -p "$lib"
  mkdir -p "$LOG_DIR"
  local mlog="$LOG_DIR/maven-$name.log"
  if ! mvn -B -f "$OPS_HOME/maven/$name/pom.xml" "-D$prop=$version" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$lib" > "$mlog" 2>&1; then
    tail -n 30 "$mlog" >&2
    die "maven download of $name $version failed (full log: $mlog)"
  fi
  echo "$name $version $(date -u +%FT%TZ)" > "$lib/.fetched"
}

# pid_of NAME -> prints pid if the pid file points at a live JVM of ours
pid_of() {
  local name="$1" pidfile="$PID_DIR/$1.pid" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  # guard against pid reuse: the command line must carry our marker
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-Dblink.ops=$name " || return 1
  echo "$pid"
}

port_open() {  # port_open PORT
  (exec 3<>"/dev/tcp/$BIND_HOST/$1") 2>/dev/null
}

# stop_server NAME : SIGTERM (clean shutdown), wait, then SIGKILL
stop_server() {
  local name="$1" pid waited=0
  if ! pid="$(pid_of "$name")"; then
    log "$name: not running"
    rm -f "$PID_DIR/$name.pid"
    return 0
  fi
  log "$name: stopping pid $pid (SIGTERM)"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if (( waited >= STOP_TIMEOUT )); then
      log "$name: still alive after ${STOP_TIMEOUT}s, SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 1; waited=$((waited + 1))
  done
  rm -f "$PID_DIR/$name.pid"
  log "$name: stopped (${waited}s)"
}

# launch NAME CMD... : start CMD detached (own session), stdout/stderr to $LOG_DIR/NAME.out
launch() {
  local name="$1"; shift
  mkdir -p "$PID_DIR" "$LOG_DIR"
  local out="$LOG_DIR/$name.out"
  rm -f "$PID_DIR/$name.pid"
  echo "==== $(date -u +%FT%TZ) starting $name ====" >> "$out"
  # the child writes its own pid, then execs the JVM (so the pid is the JVM's)
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$PID_DIR/$name.pid" "$@" >> "$out" 2>&1 < /dev/null &
  disown 2>/dev/null || true
  local i
  for i in $(seq 50); do [[ -s "$PID_DIR/$name.pid" ]] && break; sleep 0.1; done
}

fail_with_log() {  # fail_with_log NAME MESSAGE
  local name="$1" msg="$2" f
  echo "[ops ERROR] $name: $msg" >&2
  for f in "$LOG_DIR/$name.log" "$LOG_DIR/$name.out"; do
    [[ -f "$f" ]] || continue
    echo "----- last 40 lines of $f -----" >&2
    tail -n 40 "$f" >&2
  done
  exit 1
}

wipe_server() {  # wipe_server NAME DIR: delete a stopped server's data
  if pid_of "$1" >/dev/null; then die "$1: stop it before wiping"; fi
  log "$1: removing $2"
  rm -rf "$2"
}

dispatch() {  # dispatch SUBCOMMAND: the subcommands of kafka.sh and cassandra.sh (they define NAME, HOME_DIR, cmd_*)
  case "${1:-}" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) stop_server "$NAME" ;;
    restart) stop_server "$NAME"; cmd_start ;;
    status) cmd_status ;;
    wipe) wipe_server "$NAME" "$HOME_DIR" ;;
    *) echo "usage: $0 {fetch|start|stop|restart|status|wipe}" >&2; exit 2 ;;
  esac
}
