#!/usr/bin/env bash
# curl, a client we did not write, against the gateway binary on its embedded defaults (ports
# chosen by the kernel so they cannot collide): health, publish, topics, errors, long polling,
# SSE, and a clean SIGTERM exit.
set -euo pipefail
bin=${1:?usage: curl.sh path/to/streamgate}
log=$(mktemp)
"$bin" serve --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 --wt-listen 127.0.0.1:0 --demo-rate 100 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
base=""
for _ in $(seq 100); do
  base=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$log" | head -n1 | sed 's/^listening on //') || true
  [[ -n $base ]] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done

fail() { echo "FAIL: $*"; echo "--- gateway log"; cat "$log"; exit 1; }
[[ -n $base ]] || fail "the gateway did not report its address"
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

# Server-Sent Events: `curl -N` holds /sse?topics=news open in the background (bounded by
# --max-time) while three events are published; then the raw stream is checked line by line:
# `retry:` first, the epoch comment, and per event `id: <id>`, `event: news`, `data: <envelope>`.
# A JSON payload pretty-printed over several lines goes out verbatim, so its envelope spans
# several `data:` lines (which EventSource joins back with "\n"); a newline inside a JSON string
# (escaped `\n`) and a text payload with a newline (escaped inside the envelope's JSON string)
# stay on one `data:` line.
sse=$(mktemp)
curl -sN --max-time 10 -D "$sse.headers" "$base/sse?topics=news" >"$sse" 2>/dev/null &
sse_pid=$!
trap 'kill $pid $sse_pid 2>/dev/null || true; rm -f "$log" "$sse" "$sse.headers"' EXIT
for _ in $(seq 50); do
  grep -q '^retry: ' "$sse" && break
  sleep 0.1
done
expect "sse: retry first, then the epoch comment" "$(head -c 200 "$sse")" $'^retry: [0-9]+\n\n: streamgate epoch [a-z0-9]+'
expect "sse: content-type text/event-stream" "$(tr -d '\r' <"$sse.headers")" $'\n'"[Cc]ontent-[Tt]ype: text/event-stream"$'\n'
published_id() { local id=${1#*'"id":"'}; echo "${id%%'"'*}"; }
one=$(published_id "$(curl -s --max-time 5 -X POST "$base/publish/news" -H 'content-type: application/json' \
  --data-binary '{"headline":"line one\nline two"}')")
pretty=$(published_id "$(curl -s --max-time 5 -X POST "$base/publish/news" -H 'content-type: application/json' \
  --data-binary $'{\n  "a": 1,\n  "b": [\n    2\n  ]\n}')")
text=$(published_id "$(curl -s --max-time 5 -X POST "$base/publish/news?content_type=text" --data-binary $'a\nb')")
for _ in $(seq 50); do
  grep -qx "id: $text" "$sse" && break
  sleep 0.1
done
kill $sse_pid 2>/dev/null || true
wait $sse_pid 2>/dev/null || true
# block ID: the lines of the event with that id, up to its blank line, with ts masked.
block() { awk -v id="$1" '$0 == "id: " id { p = 1 } p { print } p && $0 == "" { exit }' "$sse" | sed -E 's/"ts":[0-9]+/"ts":TS/'; }
same() { # same NAME ACTUAL EXPECTED: exact text
  [[ $2 == "$3" ]] || fail "$1: got"$'\n'"$2"$'\n'"--- want"$'\n'"$3"
  echo "ok: $1"
  passed=$((passed + 1))
}
same "sse: JSON with an escaped newline in a string: one data: line" "$(block "$one")" \
  "id: $one
event: news
data: {\"type\":\"event\",\"topic\":\"news\",\"id\":\"$one\",\"ts\":TS,\"content_type\":\"json\",\"data\":{\"headline\":\"line one\\nline two\"}}"
same "sse: pretty-printed JSON: one data: line per payload line" "$(block "$pretty")" \
  "id: $pretty
event: news
data: {\"type\":\"event\",\"topic\":\"news\",\"id\":\"$pretty\",\"ts\":TS,\"content_type\":\"json\",\"data\":{
data:   \"a\": 1,
data:   \"b\": [
data:     2
data:   ]
data: }}"
same "sse: text with a newline: escaped in the envelope, one data: line" "$(block "$text")" \
  "id: $text
event: news
data: {\"type\":\"event\",\"topic\":\"news\",\"id\":\"$text\",\"ts\":TS,\"content_type\":\"text\",\"data\":\"a\\nb\"}"
expect "sse: only our three events, in order" "$(grep '^id: ' "$sse" | tr '\n' ' ')" "^id: $one id: $pretty id: $text \$"
rm -f "$sse" "$sse.headers"

kill -TERM $pid
status=0
wait $pid || status=$?
[[ $status == 0 ]] || fail "exit status $status after SIGTERM"
grep -q "shutdown complete" "$log" || fail "no clean shutdown in the log"
echo "ok: SIGTERM → exit 0"
passed=$((passed + 1))
echo "curl: $passed passed, 0 failed"
