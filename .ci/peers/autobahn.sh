#!/usr/bin/env bash
# Autobahn|Testsuite (wstest -m fuzzingclient), a WebSocket client we did not write, against the
# gateway binary's echo endpoint /ws/echo, which the gateway's configuration written here turns
# on (it is off by default outside the lab) with 16 MiB messages and no message rate. Exits 1 if any case has behavior FAILED or a close
# behavior FAILED / WRONG CODE / UNCLEAN (NON-STRICT, INFORMATIONAL and UNIMPLEMENTED are listed
# but pass); the last line is `autobahn: N passed, M failed`.
#
# Usage: autobahn.sh path/to/streamgate [quick|compression|ci|full]
#   quick        247 cases: all but 9.* (messages up to 16 MiB), 12.* and 13.* (permessage-deflate)
#   compression  283 cases: quick plus 12.1.* and 13.1.*
#   ci           447 cases: all but the 7 largest of each permessage-deflate group 12.2-12.5 and
#                13.2-13.7 (cases 9, 10, 14-18: payloads of 16 KiB and more, 1000 messages each);
#                every group, so every deflate parameter offer, still runs with cases 1-8, 11-13
#   full         517 cases
# Times here (2 cores): quick ≈ 10 s. The gateway negotiates permessage-deflate, so the 216
# compression cases really run: compression ≈ 90 s, full ≈ 10 min (601 s of wstest on
# 2026-11-27; 1 015 s on a slower day, when .ci/run took 56 min), ci ≈ 5 min (304 s on that
# slower day: the 70 cases it leaves out took 705 of the 1 015). wstest itself is the
# bottleneck.
# Report: target/autobahn/<mode>/ (index.html, index.json, wstest.log, gateway.log, gateway.toml).
#
# wstest is Python 2.7 code whose package declares no dependencies, so it lives in a Python 2.7
# virtualenv with a pinned set, built once (≈ 35 s; gcc compiles Twisted/wsaccel/ujson) and cached
# in .ci/venv-wstest/ (git-ignored; delete it to rebuild). Python 2.7 is pyenv's CPython 2.7.18,
# which these machines carry. `pyenv install 2.7.18` is tried when it is missing, but it downloads
# the source from python.org, which this workplace's network does not reach (checked: "Could not
# resolve host"), and Debian 12 has no python2.7 package, so then the setup stops with a message.
#
# Environment (optional):
#   AUTOBAHN_TIMEOUT=SECONDS     bound on the wstest run (default: quick 300, compression 1200,
#                                ci 1800, full 3600)
#   AUTOBAHN_TARGET_URL=ws://…   test that server instead of starting the binary (development)
#   PY27=/path/to/python2.7      the interpreter to build the virtualenv from
set -euo pipefail

usage() { echo "usage: $0 path/to/streamgate [quick|compression|ci|full]" >&2; exit 2; }
bin=${1:-}
mode=${2:-quick}
target_url=${AUTOBAHN_TARGET_URL:-}
[[ -n $bin || -n $target_url ]] || usage
if [[ -z $target_url ]]; then
  [[ -x $bin ]] || { echo "autobahn: not an executable: $bin" >&2; exit 2; }
  bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
fi
cd "$(dirname "$0")/../.."
root=$PWD

# wstest runs "cases" minus "exclude-cases"; in a pattern `*` matches anything and the rest is
# matched literally from the start of the case id. quick = 247 cases, compression = 283, ci = 447, full = 517.
case "$mode" in
  quick)
    cases='["*"]'
    exclude='["9.*", "12.*", "13.*"]'
    default_timeout=300 ;;
  compression)
    cases='["*"]'
    exclude='["9.*", "12.2.*", "12.3.*", "12.4.*", "12.5.*",
              "13.2.*", "13.3.*", "13.4.*", "13.5.*", "13.6.*", "13.7.*"]'
    default_timeout=1200 ;;
  ci)
    cases='["*"]'
    # Exact ids: none of them is the start of a case id that runs.
    exclude=$(printf '"%s", ' {12.2,12.3,12.4,12.5,13.2,13.3,13.4,13.5,13.6,13.7}.{9,10,14,15,16,17,18})
    exclude="[${exclude%, }]"
    default_timeout=1800 ;;
  full)
    cases='["*"]'
    exclude='[]'
    default_timeout=3600 ;;
  *) usage ;;
esac
run_timeout=${AUTOBAHN_TIMEOUT:-$default_timeout}

# --- wstest in a cached Python 2.7 virtualenv ------------------------------------------------
cache=$root/.ci/venv-wstest
wstest=$cache/env/bin/wstest
# The pinned set from autobahntestsuite's egg-info (its wheel and sdist declare none of these).
requirements='setuptools==44.0.0
txaio==2.1.0
incremental==16.10.1
pyOpenSSL==19.1.0
cryptography==3.3.2
Twisted==19.10.0
zope.interface==4.6.0
jinja2==2.11.3
markupsafe==1.1.1
Werkzeug==1.0.1
klein==17.10.0
service_identity==18.1.0
unittest2==1.1.0
six==1.16.0
autobahn[accelerate,twisted]==0.10.9
autobahntestsuite==25.10.1'

find_py27() {
  if [[ -n ${PY27:-} ]]; then echo "$PY27"; return; fi
  local pyroot
  pyroot=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  if [[ ! -x $pyroot/versions/2.7.18/bin/python2.7 ]] && command -v pyenv >/dev/null; then
    echo "autobahn: pyenv has no 2.7.18; trying \`pyenv install 2.7.18\` (builds from source)" >&2
    pyenv install -s 2.7.18 >&2 || true
  fi
  if [[ -x $pyroot/versions/2.7.18/bin/python2.7 ]]; then
    echo "$pyroot/versions/2.7.18/bin/python2.7"
  elif command -v python2.7 >/dev/null; then
    command -v python2.7
  else
    echo "autobahn: no Python 2.7 (pyenv's 2.7.18, python2.7 on PATH, or PY27=…); wstest needs it" >&2
    return 1
  fi
}

setup_wstest() {
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9 # one setup at a time; the second waiter finds it done
  if [[ -x $wstest && -f $cache/.ok ]] && [[ $(cat "$cache/.ok") == "$requirements" ]]; then
    exec 9>&-
    return
  fi
  local start=$SECONDS py27
  export PIP_NO_PYTHON_VERSION_WARNING=1 PIP_DISABLE_PIP_VERSION_CHECK=1
  echo "autobahn: building the wstest virtualenv in $cache (about a minute)"
  py27=$(find_py27)
  rm -rf "$cache/env" "$cache/.ok"
  local log=$cache/setup.log
  : >"$log"
  if ! {
    if [[ ! -f $cache/py2tools/.ok ]]; then
      rm -rf "$cache/py2tools"
      # virtualenv 20.15.1 is the last release that runs on Python 2.7.
      timeout 600 "$py27" -m pip install -q --target "$cache/py2tools" 'virtualenv==20.15.1' &&
        touch "$cache/py2tools/.ok"
    fi &&
      PYTHONPATH="$cache/py2tools" "$py27" -m virtualenv -q "$cache/env" &&
      printf '%s\n' "$requirements" >"$cache/requirements.txt" &&
      timeout 900 "$cache/env/bin/pip" install -q -r "$cache/requirements.txt" &&
      "$cache/env/bin/python" -c 'import autobahntestsuite.wstest, twisted, wsaccel'
  } >>"$log" 2>&1; then
    echo "autobahn: building the wstest virtualenv failed; last lines of $log:"
    tail -n 40 "$log"
    exit 1
  fi
  printf '%s' "$requirements" >"$cache/.ok"
  echo "autobahn: wstest ready ($((SECONDS - start)) s)"
  exec 9>&-
}

setup_wstest

# --- the server under test --------------------------------------------------------------------
out=$root/target/autobahn/$mode
rm -rf "$out"
mkdir -p "$out"
gw_pid=
ws_pid=
cleanup() {
  [[ -n $ws_pid ]] && kill -- "$ws_pid" 2>/dev/null || true
  if [[ -n $gw_pid ]] && kill -0 "$gw_pid" 2>/dev/null; then
    kill -TERM "$gw_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$gw_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

gateway_log_tail() {
  echo "--- last lines of $out/gateway.log"
  tail -n 30 "$out/gateway.log" 2>/dev/null || true
}

if [[ -n $target_url ]]; then
  url=$target_url
  agent=target
  echo "autobahn: AUTOBAHN_TARGET_URL set, testing $url (no gateway started)"
else
  agent=streamgate
  # What a conformance run needs and a public gateway must not offer (docs/CONFORMANCE.md):
  # /ws/echo on whatever the lab says, messages of 16 MiB (the 9.* cases), and no message
  # rate to speak of (9.7/9.8, 12.* and 13.* send up to 1000 messages as fast as they can).
  cat >"$out/gateway.toml" <<'TOML'
[ws]
echo = true
echo_max_message_size = 16777216
message_rate = 1000000.0
message_burst = 1000000
TOML
  started=
  for _attempt in 1 2 3; do # a free port can be taken between the probe and the bind
    port=$(free_port)
    "$bin" serve --config "$out/gateway.toml" --listen "127.0.0.1:$port" --no-tls --no-webtransport \
      --no-demo >"$out/gateway.log" 2>&1 &
    gw_pid=$!
    for _ in $(seq 100); do
      kill -0 "$gw_pid" 2>/dev/null || break
      if curl -sf --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
        started=1
        break
      fi
      sleep 0.1
    done
    [[ -n $started ]] && break
    cleanup
    gw_pid=
  done
  if [[ -z $started ]]; then
    echo "autobahn: the gateway did not answer /healthz"
    gateway_log_tail
    exit 1
  fi
  url=ws://127.0.0.1:$port/ws/echo
  echo "autobahn: gateway pid $gw_pid on 127.0.0.1:$port"
fi

# One handshake first, so that a missing endpoint reads as such instead of N failed cases.
if ! status=$(python3 - "$url" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
s = socket.create_connection((u.hostname, u.port or 80), timeout=5)
target = (u.path or "/") + (f"?{u.query}" if u.query else "")
s.sendall((f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
line = s.makefile("rb").readline().decode("latin-1").strip()
print(line)
sys.exit(0 if line.split(" ")[1:2] == ["101"] else 1)
PY
); then
  echo "autobahn: $url refused the WebSocket handshake: ${status:-no answer}"
  [[ -n $target_url ]] || gateway_log_tail
  exit 1
fi

# --- wstest -------------------------------------------------------------------------------------
cat >"$out/fuzzingclient.json" <<JSON
{
  "outdir": "$out",
  "servers": [{"agent": "$agent", "url": "$url"}],
  "cases": $cases,
  "exclude-cases": $exclude,
  "exclude-agent-cases": {}
}
JSON
echo "autobahn: wstest -m fuzzingclient, mode $mode, bound ${run_timeout} s (log: $out/wstest.log)"
start=$SECONDS
# wstest writes into its working directory too; keep that inside the report dir.
(cd "$out" && exec timeout --kill-after=10 "$run_timeout" "$wstest" -m fuzzingclient \
  -s "$out/fuzzingclient.json") >"$out/wstest.log" 2>&1 &
ws_pid=$!
ws_status=0
wait "$ws_pid" || ws_status=$?
ws_pid=
echo "autobahn: wstest finished in $((SECONDS - start)) s (exit $ws_status)"
if ((ws_status == 124 || ws_status == 137)); then
  echo "autobahn: wstest ran past ${run_timeout} s and was killed (AUTOBAHN_TIMEOUT raises it)"
  tail -n 5 "$out/wstest.log"
  exit 1
fi
if [[ ! -f $out/index.json ]]; then
  echo "autobahn: wstest wrote no $out/index.json"
  tail -n 30 "$out/wstest.log"
  exit 1
fi
crashed=
if [[ -n $gw_pid ]] && ! kill -0 "$gw_pid" 2>/dev/null; then
  crashed=1
  echo "autobahn: the gateway exited during the run"
  gateway_log_tail
fi

# --- verdict ------------------------------------------------------------------------------------
report_status=0
python3 - "$out/index.json" <<'PY' || report_status=$?
import collections, json, sys

BAD_BEHAVIOR = {"FAILED"}
BAD_CLOSE = {"FAILED", "WRONG CODE", "UNCLEAN"}

def key(case_id):
    return [int(x) for x in case_id.split(".")]

with open(sys.argv[1]) as f:
    index = json.load(f)
passed = failed = 0
for agent, cases in sorted(index.items()):
    sections = collections.defaultdict(list)
    for case_id, r in cases.items():
        sections[case_id.split(".")[0]].append((case_id, r))
    print(f"{agent}: {len(cases)} cases")
    for section in sorted(sections, key=int):
        rows = sections[section]
        behaviors = collections.Counter(r["behavior"] for _, r in rows)
        closes = collections.Counter(r["behaviorClose"] for _, r in rows)
        bad = sum(1 for _, r in rows
                  if r["behavior"] in BAD_BEHAVIOR or r["behaviorClose"] in BAD_CLOSE)
        desc = " ".join(f"{b}={n}" for b, n in sorted(behaviors.items()))
        close = " ".join(f"{b}={n}" for b, n in sorted(closes.items()))
        print(f"  {section + '.*':<5} {len(rows):>4} cases  behavior: {desc:<40} close: {close}"
              + (f"  -> {bad} failing" if bad else ""))
    not_ok = [(c, r) for c, r in cases.items() if r["behavior"] != "OK" or r["behaviorClose"] != "OK"]
    if not_ok:
        print(f"  not OK ({len(not_ok)}):")
    for case_id, r in sorted(not_ok, key=lambda kv: key(kv[0])):
        fail = r["behavior"] in BAD_BEHAVIOR or r["behaviorClose"] in BAD_CLOSE
        print(f"    {'FAIL' if fail else 'note'} {case_id:<9} behavior={r['behavior']:<13} "
              f"close={r['behaviorClose']:<10} remoteCloseCode={r.get('remoteCloseCode')} "
              f"({r.get('duration')} ms) {r.get('reportfile', '')}")
    for _, r in cases.items():
        if r["behavior"] in BAD_BEHAVIOR or r["behaviorClose"] in BAD_CLOSE:
            failed += 1
        else:
            passed += 1
print(f"autobahn: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
if [[ -n $crashed ]]; then
  exit 1
fi
exit "$report_status"
