#!/usr/bin/env bash
# `make test-arm`: raid-core's tests built for aarch64 (the Raspberry Pi 4
# target) and run under qemu user-mode emulation of a Cortex-A72, which traps
# instructions that CPU lacks. Ends by showing that the NEON kernel is the one
# registered and chosen there, so the emulated run really exercised it.
#
# Run as root on Debian 12; idempotent: installs the cross toolchain and qemu
# only if missing (`apt-get update` only then) and the Rust target only once.
# Honours CARGO_TARGET_DIR (and PROPTEST_CASES, for property tests that do not
# fix their own case count). Emulation is slow: about a minute once built.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

need_apt=()
for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user; do
    have_pkg "$p" || need_apt+=("$p")
done
if ((${#need_apt[@]})); then
    echo "installing: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v rustup >/dev/null 2>&1; then
    # The workspace's dependency script installs the Rust toolchain.
    scripts/install-deps.sh
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu cortex-a72 -L $SYSROOT"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# A forced kernel would hide which one the emulated CPU selects.
unset RAIDFS_KERNEL

echo "== raid-core tests on $TARGET under qemu (cortex-a72)"
cargo test -p raid-core --target "$TARGET"

echo "== kernel selected on the emulated Cortex-A72"
status=0
out=$(cargo test -p raid-core --target "$TARGET" --lib -q -- --exact --nocapture \
    kernels::aarch64_neon::tests::neon_kernel_is_registered_and_active 2>&1) || status=$?
echo "$out"
if [ "$status" -ne 0 ] || ! grep -q "^active kernel: neon " <<<"$out"; then
    echo "test-arm: the NEON kernel was not the active kernel" >&2
    exit 1
fi
echo "test-arm: OK (NEON kernel active and checked against scalar under emulation)"
