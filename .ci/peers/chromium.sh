#!/usr/bin/env bash
# Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core from npm) as a real peer
# of the gateway binary: each .ci/browser/tests/*.mjs runs in its own process, with a fresh
# browser profile and a gateway of its own, which run.mjs starts through .ci/browser/stack.mjs:
# the one a test's `stack` asks for (the browser client's fallback tests: a fault proxy, Redis),
# else one with .ci/browser/gateway.toml and demo events. Installs what is missing by package
# name (redis-server for tests/client-redis-restart.mjs); downloads nothing else. Last line:
# `chromium: N passed, M failed`; exits non-zero on any failure.
#   bash .ci/peers/chromium.sh target/release/streamgate [TEST.mjs ...]
set -euo pipefail
bin=$(realpath "${1:?usage: chromium.sh path/to/streamgate [test.mjs ...]}")
shift
browser_dir=$(cd "$(dirname "$0")/../browser" && pwd)
test_timeout=${CHROMIUM_TEST_TIMEOUT:-90} # seconds, per test process (launch + test + close)

# --- what the run needs, by package name
need_apt=()
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
command -v redis-server >/dev/null || need_apt+=(redis-server) # tests/client-redis-restart.mjs
if ((${#need_apt[@]})); then
  echo "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
source "$(dirname "$0")/node.sh"
need_node chromium
browser_packages playwright-core

work=$(mktemp -d /tmp/streamgate-chromium.XXXXXX)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
echo "gateway $bin, chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}')"

# --- the tests, each in its own process and profile, each bounded in time
if (($#)); then tests=("$@"); else tests=("$browser_dir"/tests/*.mjs); fi
passed=0
failed=0
for t in "${tests[@]}"; do
  t=$(realpath "$t")
  profile=$(mktemp -d "$work/profile.XXXXXX")
  status=0
  # timeout signals the whole process group (node and its Chromium); run.mjs reports and exits.
  (cd "$browser_dir" && STREAMGATE_BIN="$bin" exec timeout --kill-after=5 "$test_timeout" node run.mjs "$t" "$profile") ||
    status=$?
  if ((status == 0)); then
    passed=$((passed + 1))
  else
    ((status == 124 || status == 137)) && echo "FAIL: $(basename "$t"): over the ${test_timeout}s limit"
    failed=$((failed + 1))
  fi
  rm -rf "$profile"
done

echo "chromium: $passed passed, $failed failed"
((failed == 0))
