#!/usr/bin/env bash
# The JavaScript client (clients/js): npm ci, the type check (tsc --checkJs --strict, and the
# committed streamgate.d.ts up to date), the unit tests, the integration tests against the
# gateway binary given as $1 (skipped, saying so, without it), and the module's size.
# Last line: `jsclient: N passed, M failed`; exits non-zero on any failure.
#   bash .ci/peers/jsclient.sh [target/release/streamgate]
set -uo pipefail
source "$(dirname "$0")/node.sh"
need_node jsclient
dir=$(cd "$(dirname "$0")/../../clients/js" && pwd)
bin=${1:-}
[[ -n $bin ]] && bin=$(realpath "$bin")
cd "$dir" || exit 1

passed=0
failed=0
step() {
  local name=$1
  shift
  echo "--- $name"
  if "$@"; then passed=$((passed + 1)); else echo "FAIL: $name"; failed=$((failed + 1)); fi
}

step "npm ci" npm ci --no-audit --no-fund --loglevel=error
step "npm run check" npm run --silent check
# Node 20 has a global WebSocket only behind this flag (Node 22 has it by default); the flag
# lets the integration tests speak WebSocket too.
ws_flag=
((node_major < 22)) && ws_flag=--experimental-websocket
tests_out=$(mktemp)
step "npm test" env STREAMGATE_BIN="$bin" NODE_OPTIONS="${NODE_OPTIONS:-} $ws_flag" \
  bash -c 'npm test --silent 2>&1 | tee "$1"; exit "${PIPESTATUS[0]}"' _ "$tests_out"
echo "--- figures"
grep -E '^# (tests|pass|fail|skipped) ' "$tests_out" | tr '\n' ' '
echo
grep -E '^# .*(open after|skipped:|buffered SSE)' "$tests_out" | sed 's/^# \\\?# /  /; s/^# /  /'
rm -f "$tests_out"
step "npm run size" npm run --silent size

echo "jsclient: $passed passed, $failed failed"
((failed == 0))
