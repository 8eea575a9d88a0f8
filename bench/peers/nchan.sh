#!/usr/bin/env bash
# nginx + Nchan benchmark peer (see bench/peers/README.md).
#
#   nchan.sh install                      apt-get install nginx + libnginx-mod-nchan if missing
#   nchan.sh start <port> <rundir> [workers]
#                                         render nchan.conf.template into <rundir>, start nginx
#                                         in the background, wait for the port, print the pid
#   nchan.sh stop <rundir>                stop the nginx started with that run directory
#
# Environment overrides for start: NCHAN_BUFFER (messages kept per channel, 1000),
# NCHAN_MSG_TIMEOUT (1h), NCHAN_SHM (256M), NCHAN_WS_PING (20s), NCHAN_SSE_PING (15s),
# NCHAN_NOFILE (hard `ulimit -n`), NCHAN_USER (worker user when started as root, `nobody`),
# NGINX (nginx binary, `nginx`), NCHAN_MODULE (module .so path).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
template="$here/nchan.conf.template"
nginx_bin="${NGINX:-nginx}"

die() { echo "nchan.sh: $*" >&2; exit 1; }

find_module() {
    if [[ -n "${NCHAN_MODULE:-}" ]]; then echo "$NCHAN_MODULE"; return; fi
    local p
    for p in /usr/lib/nginx/modules/ngx_nchan_module.so \
             /usr/share/nginx/modules/ngx_nchan_module.so \
             /usr/lib64/nginx/modules/ngx_nchan_module.so; do
        [[ -f "$p" ]] && { echo "$p"; return; }
    done
    return 1
}

cmd_install() {
    if command -v "$nginx_bin" >/dev/null 2>&1 && find_module >/dev/null; then
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || die "install needs root (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    local log; log="$(mktemp)"
    # The nginx package's postinst tries to start the system service; where policy-rc.d
    # forbids it (containers) that is a harmless notice. Our instance never uses /etc/nginx.
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends nginx libnginx-mod-nchan; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2; rm -f "$log"; die "apt-get install failed"
    fi
    rm -f "$log"
    command -v "$nginx_bin" >/dev/null 2>&1 || die "nginx still missing after install"
    find_module >/dev/null || die "ngx_nchan_module.so still missing after install"
}

port_answers() {  # any HTTP answer on 127.0.0.1:$1
    local port="$1"
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/nchan_status"
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

read_pid() { [[ -s "$1/nginx.pid" ]] && tr -dc '0-9' <"$1/nginx.pid"; }

# Exited counts as gone even while a zombie: the master's parent is init, and in a container
# init may reap it a second or more later (kill -0 still succeeds on a zombie).
running() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != Z ]]
}

cmd_start() {
    [[ $# -ge 2 && $# -le 3 ]] || die "usage: start <port> <rundir> [workers]"
    local port="$1" rundir="$2" workers="${3:-2}"
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port: $port"
    [[ "$workers" =~ ^([0-9]+|auto)$ ]] || die "bad workers: $workers"
    command -v "$nginx_bin" >/dev/null 2>&1 || die "nginx not installed (run: $0 install)"
    local module; module="$(find_module)" || die "nchan module not found (run: $0 install)"

    mkdir -p "$rundir"
    rundir="$(cd "$rundir" && pwd)"
    local old; old="$(read_pid "$rundir" || true)"
    if [[ -n "$old" ]] && kill -0 "$old" 2>/dev/null; then
        die "nginx already running from $rundir (pid $old)"
    fi
    if port_answers "$port"; then die "127.0.0.1:$port is already in use"; fi
    mkdir -p "$rundir/logs" "$rundir/tmp"/{client_body,proxy,fastcgi,uwsgi,scgi}

    # worker_rlimit_nofile may not exceed the hard limit; leave room per worker for
    # listening sockets, IPC pipes, logs.
    local hard; hard="$(ulimit -Hn)"
    [[ "$hard" == unlimited ]] && hard=1048576
    local nofile="${NCHAN_NOFILE:-$hard}"
    local conns=$(( nofile > 1024 ? nofile - 256 : nofile / 2 ))

    # Started as root, the master drops workers to an unprivileged user; they must be able
    # to write the temp directories. Started as another user, `user` would only warn.
    local user_directive="# user: not root, workers run as $(id -un)"
    if [[ "$(id -u)" == 0 ]]; then
        local u="${NCHAN_USER:-nobody}" g
        g="$(id -gn "$u")"
        chown -R "$u:$g" "$rundir/tmp"
        chmod o+x "$rundir"
        if runuser -u "$u" -- test -w "$rundir/tmp/client_body" 2>/dev/null; then
            user_directive="user $u $g;"
        else  # a parent of <rundir> is closed to $u: keep the workers as root
            user_directive="user root root;"
            echo "nchan.sh: $u cannot reach $rundir/tmp, workers run as root" >&2
        fi
    fi

    local k v sed_args=()
    for kv in "PORT=$port" "RUNDIR=$rundir" "WORKERS=$workers" "MODULE=$module" \
              "NOFILE=$nofile" "CONNECTIONS=$conns" "USER_DIRECTIVE=$user_directive" \
              "SHM=${NCHAN_SHM:-256M}" "BUFFER=${NCHAN_BUFFER:-1000}" \
              "MSG_TIMEOUT=${NCHAN_MSG_TIMEOUT:-1h}" "WS_PING=${NCHAN_WS_PING:-20s}" \
              "SSE_PING=${NCHAN_SSE_PING:-15s}"; do
        k="${kv%%=*}"; v="${kv#*=}"; v="${v//\\/\\\\}"; v="${v//|/\\|}"; v="${v//&/\\&}"
        sed_args+=(-e "s|@${k}@|${v}|g")
    done
    sed "${sed_args[@]}" "$template" >"$rundir/nginx.conf"
    if grep -q '@[A-Z_]*@' "$rundir/nginx.conf"; then die "unrendered placeholder in $rundir/nginx.conf"; fi

    # -e: stderr until error_log from the config is open (nginx >= 1.19.5).
    "$nginx_bin" -p "$rundir" -e "$rundir/logs/error.log" -c "$rundir/nginx.conf" -t -q \
        || die "config test failed: $rundir/nginx.conf"
    rm -f "$rundir/nginx.pid"
    setsid "$nginx_bin" -p "$rundir" -e "$rundir/logs/error.log" -c "$rundir/nginx.conf" \
        </dev/null >>"$rundir/logs/stdout.log" 2>&1 &
    local launcher=$!

    local i pid=""
    for ((i = 0; i < 500; i++)); do  # 10 s
        if ! kill -0 "$launcher" 2>/dev/null; then
            tail -n 20 "$rundir/logs/error.log" >&2 || true
            die "nginx exited during startup"
        fi
        pid="$(read_pid "$rundir" || true)"
        if [[ -n "$pid" ]] && port_answers "$port"; then
            echo "$pid"
            return 0
        fi
        sleep 0.02
    done
    kill -TERM "$launcher" 2>/dev/null || true
    tail -n 20 "$rundir/logs/error.log" >&2 || true
    die "nginx did not answer on 127.0.0.1:$port within 10 s"
}

cmd_stop() {
    [[ $# -eq 1 ]] || die "usage: stop <rundir>"
    local rundir="$1" pid
    pid="$(read_pid "$rundir" || true)"
    [[ -n "$pid" ]] || { echo "nchan.sh: no nginx.pid in $rundir" >&2; return 0; }
    if ! running "$pid"; then rm -f "$rundir/nginx.pid"; return 0; fi
    kill -TERM "$pid"  # fast shutdown: closes every subscriber at once
    local i
    for ((i = 0; i < 500; i++)); do  # 10 s
        running "$pid" || { rm -f "$rundir/nginx.pid"; return 0; }
        sleep 0.02
    done
    echo "nchan.sh: nginx $pid still up after 10 s, sending SIGKILL to it and its workers" >&2
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$rundir/nginx.pid"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    start)   shift; cmd_start "$@" ;;
    stop)    shift; cmd_stop "$@" ;;
    *) echo "usage: $0 install | start <port> <rundir> [workers] | stop <rundir>" >&2; exit 2 ;;
esac
