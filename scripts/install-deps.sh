#!/usr/bin/env bash
# Install what building and testing raidfs needs on Debian, as root.
# Idempotent: installs only what is missing, runs `apt-get update` only then.
set -euo pipefail

need_apt=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Build: a C toolchain for -sys crates; fuse3 for mounting; python3-venv for
# the local S3 test server; e2fsprogs/util-linux for loop-device members.
for p in build-essential pkg-config fuse3 python3-venv e2fsprogs util-linux rsync; do
    have_pkg "$p" || need_apt+=("$p")
done
for p in "$@"; do
    have_pkg "$p" || need_apt+=("$p")
done

if ((${#need_apt[@]})); then
    echo "installing: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "installing the Rust toolchain with rustup"
        have_pkg curl || { apt-get update -qq; apt-get install -y -qq curl ca-certificates; }
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi

if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
fi
