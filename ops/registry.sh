#!/usr/bin/env bash
# Local Confluent-compatible schema registry (Apicurio Registry, ccompat API) on 127.0.0.1.
# Usage: ops/registry.sh {fetch|start|stop|restart|status|wipe}
#
#   API:      http://127.0.0.1:$BLINK_REGISTRY_PORT/apis/ccompat/v7   (Confluent Schema Registry REST API)
#   native:   http://127.0.0.1:$BLINK_REGISTRY_PORT/apis/registry/v2  (Apicurio's own; /admin/import sets ids)
#   storage:  in-memory H2: every start is an empty registry, stop forgets everything.
#
# fetch builds the server once with Maven (ops/maven/registry/pom.xml: the quarkus-maven-plugin re-augments
# io.apicurio:apicurio-registry-app from Maven Central into a runnable jar) into $CACHE_DIR/registry-VERSION.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME=registry
# The version is pinned in ops/maven/registry/pom.xml together with the Quarkus release it needs; this
# only names the cache folder (change both together).
REGISTRY_VERSION="${BLINK_REGISTRY_VERSION:-2.4.2.Final}"
REGISTRY_PORT="${BLINK_REGISTRY_PORT:-8081}"
REGISTRY_READY_TIMEOUT="${BLINK_REGISTRY_READY_TIMEOUT:-120}"
DIST="$CACHE_DIR/registry-$REGISTRY_VERSION"
RUNNER="$DIST/build/blink-ops-registry-1-runner.jar"
HOME_DIR="$RUN_DIR/registry"
READY_PATH="/apis/ccompat/v7/subjects"

# wait_ready TIMEOUT [PID]: a real ccompat request must answer 200 with a JSON list.
# Exit 0 when ready, 1 on timeout, 2 if PID died first.
wait_ready() {
  "$PYTHON" - "http://$BIND_HOST:$REGISTRY_PORT$READY_PATH" "$1" "${2:-}" <<'EOF'
import json, os, sys, time, urllib.request
url, timeout, pid = sys.argv[1], float(sys.argv[2]), (int(sys.argv[3]) if sys.argv[3] else None)
deadline, last = time.monotonic() + timeout, None
while True:
    if pid is not None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"registry: process {pid} exited before becoming ready", file=sys.stderr)
            sys.exit(2)
        except PermissionError:
            pass
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        if resp.status == 200 and isinstance(body, list):
            sys.exit(0)
        last = f"HTTP {resp.status}: {body!r}"
    except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
        last = repr(exc)
    if time.monotonic() >= deadline:
        print(f"registry: no answer from {url} after {timeout:.0f}s: {last}", file=sys.stderr)
        sys.exit(1)
    time.sleep(1.0)
EOF
}

cmd_fetch() {
  if [[ -f "$DIST/.fetched" && -f "$RUNNER" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (needed once to build the registry $REGISTRY_VERSION)"
  log "building Apicurio Registry $REGISTRY_VERSION from Maven Central into $DIST (once)"
  rm -rf "$DIST"; mkdir -p "$DIST" "$LOG_DIR"
  local mlog="$LOG_DIR/maven-$NAME.log"
  # -s: the apicurio POMs declare repositories other than Maven Central; the settings send them all there
  if ! mvn -B -s "$OPS_HOME/maven/registry/settings.xml" -f "$OPS_HOME/maven/registry/pom.xml" \
      -Dregistry.build.dir="$DIST/build" package > "$mlog" 2>&1; then
    tail -n 30 "$mlog" >&2
    die "maven build of the registry $REGISTRY_VERSION failed (full log: $mlog)"
  fi
  [[ -f "$RUNNER" ]] || die "maven build finished but $RUNNER is missing (full log: $mlog)"
  echo "registry $REGISTRY_VERSION $(date -u +%FT%TZ)" > "$DIST/.fetched"
}

cmd_start() {
  local pid t0 t1
  if pid="$(pid_of $NAME)"; then
    log "registry: already running (pid $pid); checking readiness"
    wait_ready "$REGISTRY_READY_TIMEOUT" "$pid" \
      || fail_with_log $NAME "running (pid $pid) but not answering on $BIND_HOST:$REGISTRY_PORT"
    return 0
  fi
  if port_open "$REGISTRY_PORT"; then
    die "registry: port $REGISTRY_PORT is already in use by a process not started by ops/ (pid file $PID_DIR/$NAME.pid)"
  fi
  cmd_fetch
  mkdir -p "$HOME_DIR/tmp" "$LOG_DIR"
  t0=$(date +%s)
  log "registry (Apicurio $REGISTRY_VERSION, in-memory): starting on $BIND_HOST:$REGISTRY_PORT"
  launch $NAME "$JAVA" -Dblink.ops=registry \
      -Xms64m -Xmx512m -XX:+UseSerialGC -Djava.awt.headless=true -Djava.io.tmpdir="$HOME_DIR/tmp" \
      -Dquarkus.http.host="$BIND_HOST" -Dquarkus.http.port="$REGISTRY_PORT" \
      -Dquarkus.log.console.color=false \
      -jar "$RUNNER"
  pid="$(cat "$PID_DIR/$NAME.pid" 2>/dev/null || true)"
  [[ -n "$pid" ]] || fail_with_log $NAME "failed to launch"
  wait_ready "$REGISTRY_READY_TIMEOUT" "$pid" \
    || fail_with_log $NAME "did not become ready within ${REGISTRY_READY_TIMEOUT}s (if still running: ops/registry.sh stop)"
  t1=$(date +%s)
  log "registry: ready (pid $pid, $((t1 - t0))s) at http://$BIND_HOST:$REGISTRY_PORT/apis/ccompat/v7"
}

cmd_status() {
  local pid
  if pid="$(pid_of $NAME)"; then
    if wait_ready 5 "$pid" 2>/dev/null; then
      echo "registry: running, ready (pid $pid, http://$BIND_HOST:$REGISTRY_PORT/apis/ccompat/v7, Apicurio $REGISTRY_VERSION)"; return 0
    fi
    echo "registry: running but NOT ready (pid $pid, $BIND_HOST:$REGISTRY_PORT)"; return 1
  fi
  echo "registry: stopped"; return 3
}

dispatch "$@"
