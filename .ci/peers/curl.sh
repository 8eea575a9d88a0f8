#!/usr/bin/env bash
# curl, a client we did not write, against the gateway binary on its embedded defaults (port
# changed so it cannot collide): health, publish, topics, errors, and a clean SIGTERM exit.
set -euo pipefail
bin=${1:?usage: curl.sh path/to/streamgate}
log=$(mktemp)
port=$((20000 + RANDOM % 20000))
"$bin" serve --listen "127.0.0.1:$port" --tls-listen 127.0.0.1:0 --demo-rate 100 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
base="http://127.0.0.1:$port"

fail() { echo "FAIL: $*"; echo "--- gateway log"; cat "$log"; exit 1; }
expect() { # expect NAME ACTUAL PATTERN
  [[ $2 =~ $3 ]] || fail "$1: got '$2', want /$3/"
  echo "ok: $1"
  passed=$((passed + 1))
}
passed=0

for _ in $(seq 100); do
  curl -sf "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
expect healthz "$(curl -s -w ' %{http_code}' "$base/healthz")" '"status":"ok".* 200$'
expect "publish json" \
  "$(curl -s -w ' %{http_code}' -X POST "$base/publish/news" -H 'content-type: application/json' -d '{"a":1}')" \
  '"id":"[a-z0-9]+:[0-9]+".*"content_type":"json".* 200$'
expect "publish binary" \
  "$(printf '\x00\xff' | curl -s -w ' %{http_code}' -X POST "$base/publish/bin" --data-binary @-)" \
  '"content_type":"binary".* 200$'
expect "bad topic" "$(curl -s -w ' %{http_code}' -X POST "$base/publish/a%20b" -d x)" '"bad_topic".* 400$'
expect "bad json" \
  "$(curl -s -w ' %{http_code}' -X POST "$base/publish/news" -H 'content-type: application/json' -d '{')" \
  '"invalid_payload".* 400$'
expect "too large" \
  "$(head -c 1048577 /dev/zero | curl -s -w ' %{http_code}' -X POST "$base/publish/big" --data-binary @-)" \
  ' 413$'
expect "wrong method" "$(curl -s -o /dev/null -w '%{http_code}' "$base/publish/news")" '^405$'
expect "demo topic flows" "$(curl -s "$base/topics")" '"topic":"demo","published":[1-9][0-9]*,"subscribers":0'

# Long polling: a poll with timeout=0 answers at once with a cursor for "now"; a publish over
# POST /poll; a poll from that cursor returns exactly that event, whose id is the next cursor.
poll=$(curl -s -w ' %{http_code}' "$base/poll?topics=lp&timeout=0")
expect "poll timeout=0 gives a cursor" "$poll" '^\{"cursor":"[a-z0-9]+:[0-9]+","messages":\[\]\} 200$'
cursor=${poll#'{"cursor":"'}
cursor=${cursor%%'"'*}
published=$(curl -s -w ' %{http_code}' -X POST "$base/poll" -d '{"type":"publish","topic":"lp","data":{"n":1},"ref":"c1"}')
expect "poll publish" "$published" '^\{"type":"published","ref":"c1","id":"[a-z0-9]+:[0-9]+"\} 200$'
id=${published#*'"id":"'}
id=${id%%'"'*}
expect "poll from cursor returns exactly that event" \
  "$(curl -s -w ' %{http_code}' "$base/poll?topics=lp&cursor=$cursor&timeout=5")" \
  '^\{"cursor":"'"$id"'","messages":\[\{"type":"event","topic":"lp","id":"'"$id"'","ts":[0-9]+,"content_type":"json","data":\{"n":1\}\}\]\} 200$'

kill -TERM $pid
status=0
wait $pid || status=$?
[[ $status == 0 ]] || fail "exit status $status after SIGTERM"
grep -q "shutdown complete" "$log" || fail "no clean shutdown in the log"
echo "ok: SIGTERM → exit 0"
passed=$((passed + 1))
echo "curl: $passed passed, 0 failed"
