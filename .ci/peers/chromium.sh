#!/usr/bin/env bash
# Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core from npm) as a real peer
# of the gateway binary: each .ci/browser/tests/*.mjs runs in a fresh browser profile against one
# gateway, on a page the gateway serves. A test that exports `stack` (the browser client's
# fallback tests) gets a gateway of its own instead, with a fault proxy or Redis as it asks
# (.ci/browser/stack.mjs; needs redis-server for the Redis one). Installs what is missing by package name; downloads
# nothing else. Last line: `chromium: N passed, M failed`; exits non-zero on any failure.
#   bash .ci/peers/chromium.sh target/release/streamgate [TEST.mjs ...]
set -euo pipefail
bin=$(realpath "${1:?usage: chromium.sh path/to/streamgate [test.mjs ...]}")
shift
browser_dir=$(cd "$(dirname "$0")/../browser" && pwd)
test_timeout=${CHROMIUM_TEST_TIMEOUT:-90} # seconds, per test process (launch + test + close)

# --- what the run needs, by package name
need_apt=()
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
command -v curl >/dev/null || need_apt+=(curl)
command -v redis-server >/dev/null || need_apt+=(redis-server) # tests/client-redis-restart.mjs
if ((${#need_apt[@]})); then
  echo "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((node_major < 20)); then
  echo "chromium: node >= 20 is needed for playwright-core (found: $(node --version 2>&1 || echo none))"
  echo "chromium: 0 passed, 1 failed"
  exit 1
fi
if ! (cd "$browser_dir" && node -e 'require("playwright-core")' 2>/dev/null) ||
  [[ $browser_dir/package-lock.json -nt $browser_dir/node_modules/.package-lock.json ]]; then
  echo "npm ci in .ci/browser"
  (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- the gateway, on a free loopback port
work=$(mktemp -d /tmp/streamgate-chromium.XXXXXX)
log=$work/gateway.log
pid=
cleanup() {
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
# gateway.toml: settings the browser tests rely on (short SSE streams, fast reconnects).
"$bin" serve --config "$browser_dir/gateway.toml" --listen "127.0.0.1:$port" --tls-listen 127.0.0.1:0 \
  --demo-rate 50 >"$log" 2>&1 &
pid=$!
base="http://127.0.0.1:$port"
up=
for _ in $(seq 100); do
  kill -0 "$pid" 2>/dev/null || break
  if curl -sf --max-time 1 "$base/healthz" >/dev/null 2>&1; then up=1; break; fi
  sleep 0.1
done
if [[ -z $up ]]; then
  echo "FAIL: gateway did not answer $base/healthz"
  echo "--- gateway log"; cat "$log"
  echo "chromium: 0 passed, 1 failed"
  exit 1
fi
echo "gateway $base (pid $pid), chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}')"

# --- the tests, each in its own process and profile, each bounded in time
if (($#)); then tests=("$@"); else tests=("$browser_dir"/tests/*.mjs); fi
passed=0
failed=0
for t in "${tests[@]}"; do
  t=$(realpath "$t")
  profile=$(mktemp -d "$work/profile.XXXXXX")
  status=0
  # timeout signals the whole process group (node and its Chromium); run.mjs reports and exits.
  (cd "$browser_dir" && STREAMGATE_BIN="$bin" exec timeout --kill-after=5 "$test_timeout" node run.mjs "$t" "$base" "$profile") ||
    status=$?
  if ((status == 0)); then
    passed=$((passed + 1))
  else
    ((status == 124 || status == 137)) && echo "FAIL: $(basename "$t"): over the ${test_timeout}s limit"
    failed=$((failed + 1))
  fi
  rm -rf "$profile"
done

if ! kill -0 "$pid" 2>/dev/null; then
  echo "FAIL: the gateway exited during the tests"
  failed=$((failed + 1))
fi
if ((failed)); then echo "--- gateway log (last 40 lines)"; tail -n 40 "$log"; fi
echo "chromium: $passed passed, $failed failed"
((failed == 0))
