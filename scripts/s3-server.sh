#!/usr/bin/env bash
# A local S3-compatible server (moto) for the raid-sync tests and benchmarks.
#
#   scripts/s3-server.sh install   create the venv with moto[server] 5.2.5 (idempotent)
#   scripts/s3-server.sh path      print the moto_server executable (for RAIDFS_MOTO)
#   scripts/s3-server.sh start     start it on a free 127.0.0.1 port, print the endpoint URL
#   scripts/s3-server.sh stop      stop the server started by `start`
#
# moto 5.2.5 exactly: older releases (5.2.1 is often preinstalled) answer
# CompleteMultipartUpload in a form aws-sdk-s3 cannot parse. The venv lives in
# RAIDFS_S3_VENV (default: target/s3-venv, which git ignores).
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
VENV="${RAIDFS_S3_VENV:-$PWD/target/s3-venv}"
RUN_DIR="${RAIDFS_S3_RUN:-$PWD/target/s3-server}"
MOTO="$VENV/bin/moto_server"

install() {
    if [ -x "$MOTO" ] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" 2>/dev/null; then
        return 0
    fi
    echo "installing moto[server]==$MOTO_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    install
    mkdir -p "$RUN_DIR"
    if [ -f "$RUN_DIR/pid" ] && kill -0 "$(cat "$RUN_DIR/pid")" 2>/dev/null; then
        cat "$RUN_DIR/endpoint"
        return 0
    fi
    local port
    port="$(free_port)"
    nohup "$MOTO" -H 127.0.0.1 -p "$port" >"$RUN_DIR/log" 2>&1 &
    echo $! >"$RUN_DIR/pid"
    local endpoint="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do
        if python3 -c "import urllib.request; urllib.request.urlopen('$endpoint/moto-api/')" 2>/dev/null; then
            echo "$endpoint" >"$RUN_DIR/endpoint"
            echo "$endpoint"
            return 0
        fi
        sleep 0.1
    done
    echo "moto_server did not answer on $endpoint; log: $RUN_DIR/log" >&2
    stop
    return 1
}

stop() {
    if [ -f "$RUN_DIR/pid" ]; then
        kill "$(cat "$RUN_DIR/pid")" 2>/dev/null || true
        rm -f "$RUN_DIR/pid" "$RUN_DIR/endpoint"
    fi
}

case "${1:-}" in
install) install ;;
path) install; echo "$MOTO" ;;
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 install|path|start|stop" >&2
    exit 2
    ;;
esac
