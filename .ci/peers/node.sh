# Sourced by the peers that run on Node (chromium.sh, eventsource.sh, jsclient.sh).

# need_node SUITE: Node >= 20 (its major version left in $node_major), or SUITE's summary line
# with one failure, and exit 1.
need_node() {
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if ((node_major < 20)); then
    echo "$1: node >= 20 is needed (found: $(node --version 2>&1 || echo none))"
    echo "$1: 0 passed, 1 failed"
    exit 1
  fi
}

# browser_packages MODULE: .ci/browser's npm packages (package-lock.json), installed with
# `npm ci` unless MODULE already loads from an install no older than the lock file.
browser_packages() {
  local dir
  dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../browser" && pwd)
  if ! (cd "$dir" && node -e "require('$1')" 2>/dev/null) ||
    [[ $dir/package-lock.json -nt $dir/node_modules/.package-lock.json ]]; then
    echo "npm ci in .ci/browser"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
