#!/usr/bin/env bash
# The test command: install Blink, lint it (ruff), start the real Kafka, Cassandra and schema registry (ops/) and
# the secured Kafka and Cassandra (ops/secure.sh), run every test, stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
# The night report's browser test (tests/e2e/test_night_report.py) drives Debian's Chromium with its driver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  as_root=""; [ "$(id -u)" = 0 ] || as_root="sudo -n"
  { $as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq chromium \
    chromium-driver; } \
    >/dev/null 2>&1 || echo "tests/run.sh: could not install chromium (the browser test fails under BLINK_REQUIRE_SERVERS=1)" >&2
fi
# Lint first, it takes a second: the rules are pyproject.toml's [tool.ruff]; any finding fails the run.
python3 -m ruff check .
started_here=0
if ! ops/status.sh >/dev/null 2>&1; then
  ops/up.sh
  started_here=1
fi
# The secured Kafka and Cassandra of ops/secure.sh (tests/integration/test_security.py), beside the plain ones.
secure_here=0
cluster_here=0
cleanup() {
  if [ "$cluster_here" = 1 ]; then ops/cluster.sh down || true; fi
  if [ "$secure_here" = 1 ]; then ops/secure.sh down || true; fi
  if [ "$started_here" = 1 ]; then ops/down.sh || true; fi
}
trap cleanup EXIT
needs_secure() {  # the whole suite, or tests asked for that include test_security.py
  [ "$#" -eq 0 ] && return 0
  local arg
  for arg in "$@"; do
    case "${arg%/}" in tests|tests/integration|*test_security*) return 0 ;; esac
  done
  return 1
}
if needs_secure "$@" && ! ops/secure.sh status >/dev/null 2>&1; then
  secure_here=1
  # A failed start fails test_security.py (BLINK_REQUIRE_SERVERS=1), not the rest of the run.
  ops/secure.sh up || echo "tests/run.sh: ops/secure.sh up failed: tests/integration/test_security.py will fail" >&2
fi
export BLINK_REQUIRE_SERVERS=1
export BLINK_REGISTRY_URL="${BLINK_REGISTRY_URL:-http://127.0.0.1:${BLINK_REGISTRY_PORT:-8081}/apis/ccompat/v7}"
if [ "$#" -gt 0 ]; then  # the tests asked for, as asked (BLINK_CLUSTER=1 for the cluster's)
  python3 -m pytest -q -p no:cacheprovider "$@"
  exit 0  # (set -e: a failure has already exited with pytest's status; the trap stops what was started here)
fi
# Every test on the single node first; then the replicated cluster of ops/cluster.sh (three Cassandra nodes, three
# Kafka brokers: 3.5 GB and six JVMs, so only for its own tests), its node-failure tests, and down again.
python3 -m pytest -q -p no:cacheprovider --ignore=tests/integration/test_cluster.py
# The secured servers are done with (about 1.3 GB and two JVMs less beside the cluster's six).
if [ "$secure_here" = 1 ]; then ops/secure.sh down || true; secure_here=0; fi
if ! ops/cluster.sh status >/dev/null 2>&1; then
  cluster_here=1
  ops/cluster.sh up
fi
BLINK_CLUSTER=1 python3 -m pytest -q -p no:cacheprovider tests/integration/test_cluster.py
