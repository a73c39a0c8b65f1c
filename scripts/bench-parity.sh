#!/usr/bin/env bash
# Parity speed: raidfs's kernels against SnapRAID's (`snapraid -T`) and
# against single-core memory-read bandwidth, all measured in the same run.
#
#   scripts/bench-parity.sh            (SPEEDTEST_ARGS="--kernel gfni" etc.)
#
# Installs Debian's snapraid if it is missing (needs root; without it the
# SnapRAID comparison is skipped). Both tools use 8 data buffers of 256 KiB
# and report data bytes per second.
#
# The machine may be shared: our speedtest times by the thread's on-CPU
# time, and SnapRAID (which times by the wall clock) is put on the same
# footing by scaling its figures by wall time / CPU time of its run. Run it
# twice when the figures matter.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

out="target/bench-parity"
mkdir -p "$out"

if ! command -v snapraid >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "==> installing snapraid (apt)"
        apt-get install -y snapraid >/dev/null || { apt-get update >/dev/null && apt-get install -y snapraid >/dev/null; } || true
    else
        echo "==> snapraid missing and not root: skipping the SnapRAID comparison"
    fi
fi

echo "==> building the speedtest (release)"
cargo build --release -q -p raid-core --example speedtest

compare=()
if command -v snapraid >/dev/null 2>&1; then
    echo "==> snapraid -T"
    # `snapraid -T` prints to stdout; `time` reports real/user/sys seconds.
    TIMEFORMAT='%R %U %S'
    { time snapraid -T >"$out/snapraid-T.txt" 2>&1; } 2>"$out/snapraid-time.txt"
    read -r real user sys <"$out/snapraid-time.txt"
    scale=$(awk -v r="$real" -v u="$user" -v s="$sys" 'BEGIN { c = u + s; printf "%.3f", (c > 0 && r > c) ? r / c : 1 }')
    echo "    snapraid -T: ${real}s wall, $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')s CPU: scaling its figures by $scale"
    grep -E '^ +(gen|rec)[0-9] ' "$out/snapraid-T.txt" | sed 's/^/    /'
    compare=(--snapraid "$out/snapraid-T.txt" --snapraid-scale "$scale")
fi

echo "==> raidfs speedtest"
# shellcheck disable=SC2086
cargo run --release -q -p raid-core --example speedtest -- \
    "${compare[@]}" --json-out "$out/speedtest.json" ${SPEEDTEST_ARGS:-} | tee "$out/speedtest.txt"
echo "==> results in $out/"
