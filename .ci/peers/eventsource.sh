#!/usr/bin/env bash
# The `eventsource` npm package (a WHATWG EventSource for Node, pinned in .ci/browser/package.json)
# as a real SSE peer of the gateway binary: live events, resume with Last-Event-ID after a
# disconnect, the package's own reconnects after the server ends streams (max_stream_duration),
# @gap after resuming from an evicted id, @reset, ?since=, and 400s for bad Last-Event-IDs.
# Two gateways on free loopback ports: A with demo events and short SSE streams, B with
# `--history-events 5` and no demo. Last line: `eventsource: N passed, M failed`.
#   bash .ci/peers/eventsource.sh target/release/streamgate
set -euo pipefail
bin=$(realpath "${1:?usage: eventsource.sh path/to/streamgate}")
browser_dir=$(cd "$(dirname "$0")/../browser" && pwd)
limit=${EVENTSOURCE_TIMEOUT:-120} # seconds for all the checks

source "$(dirname "$0")/node.sh"
need_node eventsource
browser_packages eventsource

work=$(mktemp -d /tmp/streamgate-eventsource.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$work/a.toml" <<'EOF'
[sse]
max_stream_duration = 1.5
retry = 0.2
EOF

# start NAME ARGS...: a gateway on port 0 (the kernel picks a free one); sets base_NAME from the
# address it logs.
start() {
  local name=$1 log=$work/$1.log base=
  shift
  "$bin" serve --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 --wt-listen 127.0.0.1:0 "$@" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    base=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$log" | head -n1 | sed 's/^listening on //') || true
    [[ -n $base ]] && curl -sf --max-time 1 "$base/healthz" >/dev/null 2>&1 && break
    base=
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $base ]]; then
    echo "FAIL: gateway $name did not come up"
    echo "--- gateway $name log"; cat "$log"
    echo "eventsource: 0 passed, 1 failed"
    exit 1
  fi
  printf -v "base_$name" '%s' "$base"
}
start A --config "$work/a.toml" --demo-rate 50
start B --no-demo --history-events 5
echo "gateway A $base_A (demo 50/s, sse streams 1.5 s, retry 0.2 s), B $base_B (history 5 events)," \
  "eventsource $(cd "$browser_dir" && node -p 'require("eventsource/package.json").version')"

# Shown as it runs; the summary line is printed below, counting this script's own checks too.
set +e
(cd "$browser_dir" && exec timeout --kill-after=5 "$limit" node eventsource.mjs "$base_A" "$base_B") 2>&1 |
  tee "$work/out" | grep --line-buffered -v '^eventsource: '
status=${PIPESTATUS[0]}
set -e
passed=$(grep -c '^ok: ' "$work/out" || true)
failed=$(grep -c '^FAIL: ' "$work/out" || true)
if ((status == 124 || status == 137)); then
  echo "FAIL: over the ${limit}s limit"
  failed=$((failed + 1))
elif ! grep -q '^eventsource: [0-9]* passed, [0-9]* failed$' "$work/out"; then
  echo "FAIL: eventsource.mjs ended without its summary (exit status $status)"
  failed=$((failed + 1))
fi
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    echo "FAIL: gateway $([[ $i == 0 ]] && echo A || echo B) exited during the checks"
    failed=$((failed + 1))
  fi
done
if ((failed)); then
  for n in A B; do echo "--- gateway $n log (last 20 lines)"; tail -n 20 "$work/$n.log"; done
fi
echo "eventsource: $passed passed, $failed failed"
((failed == 0))
