#!/usr/bin/env bash
# The three-node example of examples/cluster/ run for real: a broker of its own (Redis, or NATS
# JetStream when the binary has no Redis support), node1.toml…node3.toml and nginx.conf as
# shipped (only their ports are moved to free ones), and clients that only ever talk to nginx:
# curl for SSE and long polling, python `websockets` for WebSocket, each resuming from its last
# id when its stream breaks. Events are published through nginx; every client must receive
# each of them exactly once, in order. Then the node holding the SSE stream is killed (and, in
# a second round, the one holding the WebSocket), more events are published, and every client
# must carry on through nginx without losing or repeating one. Publishes go through nginx to the
# nodes' internal listeners (server.internal_listen), and nginx's status block answers each
# node's /healthz from there.
#
#   bash .ci/cluster.sh target/release/streamgate
#
# CLUSTER_BACKEND=redis|nats picks the broker (default: redis if the binary supports it).
# Installs nginx-light (apt) and websockets (pip) when missing. Exits non-zero on any failure
# and stops everything it started. Last line: `cluster: N passed, M failed`.
set -euo pipefail
bin=$(realpath "${1:?usage: cluster.sh path/to/streamgate}")
repo=$(cd "$(dirname "$0")/.." && pwd)
cluster_dir=$repo/examples/cluster
topic=cluster

export PATH="$PATH:/usr/sbin"
if ! command -v nginx >/dev/null; then
  echo "cluster: apt-get install nginx-light"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light
fi
if ! python3 -c 'import websockets' 2>/dev/null; then
  echo "cluster: pip install websockets"
  python3 -m pip install -q websockets
fi

work=$(mktemp -d /tmp/streamgate-cluster.XXXXXX)
chmod 755 "$work" # nginx workers (user nobody) keep temporary files under it
pids=()
cleanup() {
  local status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if ((status != 0)) && [[ -d $work ]]; then
    for log in "$work"/*.log; do
      [[ -s $log ]] && { echo "--- ${log##*/}"; tail -n 40 "$log"; }
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
ok() {
  echo "ok: $*"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL: $*"
  failed=$((failed + 1))
  echo "cluster: $passed passed, $failed failed"
  exit 1
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# until SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds; fails after SECONDS.
until_ok() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# --- The backend: Redis when the binary has it, else NATS. ---------------------------------
backend=${CLUSTER_BACKEND:-}
if [[ -z $backend ]]; then
  # A build without the feature refuses `--bus redis` at start-up, before it listens.
  "$bin" serve --bus redis --bus-url redis://127.0.0.1:1 --listen 127.0.0.1:0 --no-tls \
    --no-webtransport --no-demo >"$work/probe.log" 2>&1 &
  probe=$!
  until_ok 10 grep -qE 'listening on http://|no Redis support|^streamgate: ' "$work/probe.log" || true
  kill "$probe" 2>/dev/null || true
  wait "$probe" 2>/dev/null || true
  if grep -q 'no Redis support' "$work/probe.log"; then backend=nats; else backend=redis; fi
fi
broker_port=$(free_port)
case $backend in
  redis)
    broker_url=redis://127.0.0.1:$broker_port
    redis-server --port "$broker_port" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$work" --daemonize no >"$work/broker.log" 2>&1 &
    ;;
  nats)
    broker_url=nats://127.0.0.1:$broker_port
    mkdir -p "$work/nats"
    nats-server -js -sd "$work/nats" -p "$broker_port" -a 127.0.0.1 >"$work/broker.log" 2>&1 &
    ;;
  *) fail "CLUSTER_BACKEND must be redis or nats, not $backend" ;;
esac
pids+=($!)
until_ok 10 port_open "$broker_port" || fail "the $backend broker did not start"
ok "$backend broker on $broker_url"

# --- Three nodes from node1.toml…node3.toml, on free ports. ---------------------------------
declare -A node_pid node_port node_internal
listening_or_gone() { grep -q 'listening on http://' "$1" || ! kill -0 "$2" 2>/dev/null; }
start_node() { # start_node N: node N with its file, its ports moved, the broker overridden
  local n=$1 log=$work/node$1.log port
  "$bin" serve --config "$cluster_dir/node$n.toml" --bus "$backend" --bus-url "$broker_url" \
    --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 --wt-listen 127.0.0.1:0 \
    --internal-listen 127.0.0.1:0 >"$log" 2>&1 &
  node_pid[$n]=$!
  pids+=($!)
  until_ok 10 listening_or_gone "$log" "${node_pid[$n]}" || true
  grep -q 'listening on http://' "$log" || fail "node$n did not start: $(tail -n 3 "$log")"
  port=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$log" | head -n1 | sed 's/.*://')
  node_port[$n]=$port
  port=$(grep -o 'listening (internal) on http://127\.0\.0\.1:[0-9]*' "$log" | head -n1 | sed 's/.*://')
  [[ -n $port ]] || fail "node$n has no internal listener: $(tail -n 3 "$log")"
  node_internal[$n]=$port
  until_ok 15 curl -sf "http://127.0.0.1:$port/healthz" -o /dev/null ||
    fail "node$n never became healthy: $(curl -s "http://127.0.0.1:$port/healthz")"
}
for n in 1 2 3; do start_node "$n"; done
ok "three nodes healthy on ports ${node_port[1]} ${node_port[2]} ${node_port[3]} (internal ${node_internal[1]} ${node_internal[2]} ${node_internal[3]})"

# --- nginx with examples/cluster/nginx.conf, pointed at those ports. ------------------------
nginx_port=$(free_port)
status_port=$(free_port)
sed -e "s/127\.0\.0\.1:8080;/127.0.0.1:$nginx_port;/" \
  -e "s/127\.0\.0\.1:8090;/127.0.0.1:$status_port;/" \
  -e "s/127\.0\.0\.1:8081 /127.0.0.1:${node_port[1]} /" \
  -e "s/127\.0\.0\.1:8082 /127.0.0.1:${node_port[2]} /" \
  -e "s/127\.0\.0\.1:8083 /127.0.0.1:${node_port[3]} /" \
  -e "s#127\.0\.0\.1:9091\([ /]\)#127.0.0.1:${node_internal[1]}\1#g" \
  -e "s#127\.0\.0\.1:9092\([ /]\)#127.0.0.1:${node_internal[2]}\1#g" \
  -e "s#127\.0\.0\.1:9093\([ /]\)#127.0.0.1:${node_internal[3]}\1#g" \
  "$cluster_dir/nginx.conf" >"$work/nginx.conf"
grep -q "127.0.0.1:$nginx_port;" "$work/nginx.conf" && grep -q "127.0.0.1:${node_port[3]} " "$work/nginx.conf" &&
  grep -q "127.0.0.1:$status_port;" "$work/nginx.conf" &&
  [[ $(grep -c "127.0.0.1:${node_internal[3]}[ /]" "$work/nginx.conf") == 2 ]] ||
  fail "nginx.conf no longer has the ports this script moves (8080, 8090, 8081…8083, 9091…9093)"
nginx -t -q -e stderr -p "$work/" -c "$work/nginx.conf" >"$work/nginx.log" 2>&1 || fail "nginx -t: $(cat "$work/nginx.log")"
nginx -e stderr -p "$work/" -c "$work/nginx.conf" >>"$work/nginx.log" 2>&1 &
pids+=($!)
lb=http://127.0.0.1:$nginx_port
until_ok 10 curl -sf "$lb/healthz" -o /dev/null || fail "nginx does not answer on $lb"
ok "nginx on $lb"
status=http://127.0.0.1:$status_port
for n in 1 2 3; do
  health=$(curl -s "$status/node$n/healthz")
  [[ $health == *'"status":"ok"'* && $health == *'"cap":10000'* ]] ||
    fail "node$n's /healthz through nginx's status block: $health"
  curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${node_internal[$n]}/sse?topics=$topic" | grep -q 404 ||
    fail "node$n's internal listener serves subscribers"
done
ok "each node's /healthz through nginx's status block (internal listeners), which serve no subscriber"

# --- Clients, all through nginx. -------------------------------------------------------------
# SSE: curl holds the stream; when it ends, the loop reconnects with Last-Event-ID, as
# EventSource does.
sse_loop() {
  local out=$work/sse.out curl_pid= last
  trap 'kill $curl_pid 2>/dev/null; exit 0' TERM
  while :; do
    last=$(grep '^id: ' "$out" 2>/dev/null | tail -n1 | cut -c5- || true)
    curl -sN --max-time 300 ${last:+-H "Last-Event-ID: $last"} "$lb/sse?topics=$topic" >>"$out" 2>>"$work/sse.log" &
    curl_pid=$!
    wait "$curl_pid" || true
    echo "stream ended; reconnecting after $last" >>"$work/sse.log"
    sleep 0.3
  done
}
# WebSocket: python `websockets`; on a lost connection it reconnects with ?since=<last id>.
cat >"$work/ws_client.py" <<'EOF'
import asyncio, json, sys
import websockets

base, topic, out, state = sys.argv[1:5]

async def main():
    last = None
    while True:
        url = f"{base}/ws?topics={topic}" + (f"&since={last}" if last else "")
        try:
            async with websockets.connect(url, subprotocols=["streamgate.v1"], open_timeout=5) as ws:
                async for frame in ws:
                    message = json.loads(frame)
                    if message["type"] == "event":
                        last = message["id"]
                        with open(out, "a") as f:
                            f.write(f"{last} {json.dumps(message['data'], separators=(',', ':'))}\n")
                    elif message["type"] == "subscribed":
                        with open(state, "a") as f:
                            f.write(f"subscribed since={last}\n")
                    else:
                        print(f"notice: {message}", file=sys.stderr, flush=True)
        except Exception as e:  # a killed node: reconnect through nginx, from the last id
            print(f"disconnected: {e!r}; reconnecting after {last}", file=sys.stderr, flush=True)
        await asyncio.sleep(0.3)

asyncio.run(main())
EOF
# subscribers N: the number of subscribers of $topic on node N (0 if it is down).
subscribers() {
  curl -s --max-time 2 "http://127.0.0.1:${node_port[$1]}/topics" 2>/dev/null |
    python3 -c 'import json, sys
topics = json.load(sys.stdin)["topics"]
print(sum(t["subscribers"] for t in topics if t["topic"] == sys.argv[1]))' "$topic" 2>/dev/null || echo 0
}
counts() { echo "$(subscribers 1) $(subscribers 2) $(subscribers 3)"; }
# holder BEFORE: the node whose subscriber count went up since BEFORE (`counts` output).
holder() {
  local before=($1) after=($(counts)) n
  for n in 1 2 3; do
    ((after[n - 1] > before[n - 1])) && { echo "$n"; return 0; }
  done
  return 1
}

before=$(counts)
sse_loop &
sse_pid=$!
pids+=($sse_pid)
until_ok 10 grep -qs '^retry: ' "$work/sse.out" || fail "no SSE stream through nginx"
until_ok 5 holder "$before" >/dev/null || fail "no node counts the SSE subscriber: $(counts)"
sse_node=$(holder "$before")
before=$(counts)
python3 "$work/ws_client.py" "ws://127.0.0.1:$nginx_port" "$topic" "$work/ws.out" "$work/ws.state" 2>>"$work/ws.log" &
pids+=($!)
until_ok 10 grep -qs subscribed "$work/ws.state" || fail "no WebSocket through nginx"
until_ok 5 holder "$before" >/dev/null || fail "no node counts the WebSocket subscriber: $(counts)"
ws_node=$(holder "$before")
ok "SSE stream on node$sse_node, WebSocket on node$ws_node (least_conn), both through nginx"

# Long polling: the cursor of an immediate poll is "now"; later polls resume from it.
poll_cursor=$(curl -s "$lb/poll?topics=$topic&timeout=0" | python3 -c 'import json, sys; print(json.load(sys.stdin)["cursor"])') ||
  fail "no long-poll cursor through nginx"
polled=()
# poll_until COUNT: polls through nginx from the cursor until COUNT events came.
poll_until() {
  local deadline=$((SECONDS + 15)) answer
  while ((${#polled[@]} < $1)); do
    ((SECONDS < deadline)) || return 1
    answer=$(curl -s --max-time 10 "$lb/poll?topics=$topic&cursor=$poll_cursor&timeout=2") || continue
    poll_cursor=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["cursor"])' "$answer") || return 1
    polled+=($(python3 -c 'import json, sys
for m in json.loads(sys.argv[1])["messages"]:
    if m["type"] == "event": print(m["id"])' "$answer"))
  done
}

# --- Publish through nginx; every client gets everything, in order, once. --------------------
expected=()
publish() { # publish FROM TO: events [n] for n in FROM..TO, through nginx
  local n answer id
  for n in $(seq "$1" "$2"); do
    answer=$(curl -s --max-time 10 -X POST "$lb/publish/$topic" -H 'content-type: application/json' -d "[$n]")
    [[ $answer =~ \"id\":\"([a-z0-9]+:[0-9]+)\" ]] || fail "publish [$n] through nginx: $answer"
    expected+=("${BASH_REMATCH[1]}")
  done
}
sse_ids() { grep '^id: ' "$work/sse.out" | cut -c5-; }
ws_ids() { cut -d' ' -f1 "$work/ws.out" 2>/dev/null; }
want() { printf '%s\n' "${expected[@]}"; }
has_all() { [[ $("$1" | wc -l) -ge ${#expected[@]} ]]; }
check_clients() { # check_clients WHEN
  until_ok 15 has_all sse_ids || true
  [[ $(sse_ids) == "$(want)" ]] || fail "SSE $1: got $(sse_ids | tr '\n' ' '), want ${expected[*]}"
  ok "SSE $1: ${#expected[@]} events, in order, none twice"
  until_ok 15 has_all ws_ids || true
  [[ $(ws_ids) == "$(want)" ]] || fail "WebSocket $1: got $(ws_ids | tr '\n' ' '), want ${expected[*]}"
  ok "WebSocket $1: ${#expected[@]} events, in order, none twice"
  poll_until "${#expected[@]}" || true
  [[ $(printf '%s\n' "${polled[@]}") == "$(want)" ]] ||
    fail "long polling $1: got ${polled[*]}, want ${expected[*]}"
  ok "long polling $1: ${#expected[@]} events, in order, none twice"
}

publish 1 10
check_clients "with three nodes"

# WebTransport does not go through nginx: the cert-hash document (fetched through it) names
# the UDP address of the node that answered.
wt=$(curl -s "$lb/wt/cert-hash")
[[ $wt =~ \"url\":\"https://127\.0\.0\.1:[0-9]+/wt\" ]] || fail "/wt/cert-hash through nginx: $wt"
ok "WebTransport: /wt/cert-hash through nginx names a node's own UDP address (${BASH_REMATCH[0]})"

# --- Failover: kill the node of each stream in turn; clients reconnect through nginx. -------
kill_node() {
  kill -KILL "${node_pid[$1]}" 2>/dev/null || true
  wait "${node_pid[$1]}" 2>/dev/null || true
  node_pid[$1]=
}
kill_node "$sse_node"
ok "killed node$sse_node (SIGKILL), which held the SSE stream"
publish 11 20
check_clients "after losing node$sse_node"
until_ok 5 grep -q "stream ended" "$work/sse.log" || fail "the SSE stream never broke"
ok "the SSE client reconnected through nginx with Last-Event-ID: $(grep -c 'stream ended' "$work/sse.log") reconnection(s)"

if [[ -n ${node_pid[$ws_node]} ]]; then
  kill_node "$ws_node"
  ok "killed node$ws_node (SIGKILL), which held the WebSocket"
  publish 21 30
  check_clients "after losing node$ws_node too"
fi
grep -q disconnected "$work/ws.log" || fail "the WebSocket never had to reconnect"
ok "the WebSocket client reconnected through nginx with ?since=: $(grep -c disconnected "$work/ws.log") reconnection(s)"
curl -sf "$lb/healthz" -o /dev/null || fail "/healthz through nginx after the failover"
ok "/healthz through nginx still 200"

echo "cluster: $passed passed, $failed failed ($backend)"
