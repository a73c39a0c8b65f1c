# Sourced by the benchmarks that mount filesystems: run from the checkout,
# as root, with the raidfs binaries in $BIN (BENCH_BIN, or a release build).
#   bench_setup NAME
bench_setup() {
    cd "$(dirname "$0")/.."
    ROOT="$PWD"
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    if [ "$(id -u)" != 0 ]; then
        echo "$1 mounts filesystems and drops caches: run it as root" >&2
        exit 1
    fi
    if [ -n "${BENCH_BIN:-}" ]; then
        BIN="$BENCH_BIN"
    else
        echo "==> building raidfs (release)"
        cargo build --release --quiet -p raid-fuse --bins
        BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
    fi
}
